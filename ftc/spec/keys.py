"""Names in the spec: which keys each section knows, where a leaf lives, and "did you mean"."""

from __future__ import annotations

import difflib
import functools

from pydantic import BaseModel

from ftc.spec.fields import names_of
from ftc.spec.foreign import FOREIGN_NAMES
from ftc.spec.model import SECTION_ALIASES, SpecBase, parameter_sections, spec_model


def accepted_names(model: type[BaseModel]) -> dict[str, str]:
    """Every key a model accepts (primary names and aliases) -> the primary name."""
    out: dict[str, str] = {}
    for field_name, field in model.model_fields.items():
        for n in names_of(field_name, field):
            out[n] = field_name
    if issubclass(model, SpecBase):  # the spec's root, with or without targets
        out.update({alias: section for alias, section in SECTION_ALIASES.items()})
    return out


@functools.cache
def leaf_index() -> dict[str, tuple[str, str]]:
    """Leaf name or alias -> (section, primary name), for the sections of parameters (not targets)."""
    index: dict[str, tuple[str, str]] = {}
    for section, model in parameter_sections().items():
        for name, primary in accepted_names(model).items():
            index.setdefault(name, (section, primary))
    return index


def model_at(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model that holds the keys at `path` (a tuple of keys), or None past a leaf."""
    model: type[BaseModel] = spec_model()
    for part in path:
        if isinstance(part, int):
            return None
        primary = accepted_names(model).get(str(part))
        if primary is None:
            return None
        ann = model.model_fields[primary].annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def suggest(path: tuple[str | int, ...]) -> str:
    """A hint for an unknown key at `path`: the closest name there, or the section it belongs to."""
    *parent, key = path
    key = str(key)
    model = model_at(tuple(parent))
    names = list(accepted_names(model)) if model else []
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    home = leaf_index().get(key)
    if home and (not parent or parent[0] != home[0]):
        return f"did you mean {home[0]}.{home[1]}? ({key} belongs in the {home[0]} section)"
    foreign = foreign_hint(key, tuple(str(p) for p in parent))
    if foreign:
        return foreign
    if close:
        return f"did you mean {close[0]}?"
    elsewhere = difflib.get_close_matches(key, list(leaf_index()), n=1, cutoff=0.8)
    if elsewhere:
        section, primary = leaf_index()[elsewhere[0]]
        return f"did you mean {section}.{primary}?"
    if names:
        return "known keys here: " + ", ".join(sorted(n for n in names if n in (model.model_fields if model else {})))
    return ""


def foreign_hint(key: str, parent: tuple[str, ...] = ()) -> str:
    """"did you mean" for another tool's name (FOREIGN_NAMES), relative to the section `parent`, or ""."""
    if key not in FOREIGN_NAMES:
        return ""
    dotted, how = FOREIGN_NAMES[key]
    prefix = ".".join(parent) + "." if parent else ""
    target = dotted.removeprefix(prefix) if prefix and dotted.startswith(prefix) else dotted
    return f"did you mean {target}? ({key} is another tool's name" + (f"; {how})" if how else ")")


def split_override_key(dotted: str) -> tuple[str, ...]:
    """`training.learning_rate` -> its path; a bare leaf (`learning_rate`) gets its section."""
    parts = tuple(p for p in dotted.split("."))
    if len(parts) == 1 and parts[0] not in accepted_names(spec_model()) and parts[0] in leaf_index():
        return leaf_index()[parts[0]]
    return parts


__all__ = ["accepted_names", "foreign_hint", "leaf_index", "model_at", "split_override_key", "suggest"]
