"""`--set dotted.key=value` overrides, typed by the schema like values in the file."""

from __future__ import annotations

from ftc.errors import Location, Problem, SpecError, UnreadableSpec
from ftc.spec.keys import accepted_names, model_at, split_override_key, suggest
from ftc.spec.loader import SourceDoc, load_value
from ftc.spec.model import SCALAR_SHORTHANDS, SECTION_ALIASES
from ftc.spec.secrets import mask_secrets

# Longest `--set KEY=VALUE` shown as a location; a longer one ends in "...".
MAX_LOCATION = 120


def apply_overrides(doc: SourceDoc, overrides: list[str]) -> None:
    """Set each `key=value` into `doc` (value parsed as YAML); `SpecError` for unknown keys or bad syntax."""
    problems = []
    for item in overrides:
        where = override_location(item)
        key, sep, text = item.partition("=")
        if not sep or not key:
            problems.append(Problem(where, mask_secrets(key), "expected KEY=VALUE, e.g. --set training.num_train_epochs=3"))
            continue
        path = split_override_key(key.strip())
        unknown = _first_unknown(path)
        if unknown is not None:
            hint = suggest(path[: unknown + 1])
            name = mask_secrets(".".join(path[: unknown + 1]))
            problems.append(Problem(where, name, "unknown key" + (f"; {hint}" if hint else "")))
            continue
        try:
            value = load_value(text, str(where)) if text.strip() else ""
        except UnreadableSpec as exc:
            problems.append(Problem(where, mask_secrets(".".join(path)), exc.problem.message))
            continue
        _set(doc, path, value, where)
    if problems:
        raise SpecError(problems)


def override_location(item: str) -> Location:
    """`--set KEY=VALUE` as a location: secrets masked, a long value cut short."""
    text = mask_secrets(f"--set {item}")
    return Location(text if len(text) <= MAX_LOCATION else text[: MAX_LOCATION - 3] + "...")


def _first_unknown(path: tuple[str, ...]) -> int | None:
    for i in range(len(path)):
        model = model_at(path[:i])
        if model is None:  # inside a free-form value such as env.vars
            return None if i > 0 and _is_mapping_leaf(path[:i]) else i
        if path[i] not in accepted_names(model):
            return i
    return None


def _is_mapping_leaf(path: tuple[str, ...]) -> bool:
    parent = model_at(path[:-1])
    if parent is None:
        return False
    field = parent.model_fields.get(accepted_names(parent).get(path[-1], ""))
    return field is not None and "dict" in str(field.annotation)


def _set(doc: SourceDoc, path: tuple[str, ...], value: object, where: Location) -> None:
    section = path[0]
    for alias, target in SECTION_ALIASES.items():
        if target == section and alias in doc.data:
            path = (alias, *path[1:])
    node = doc.data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None or isinstance(child, dict) else {_shorthand_key(part): child}
            node[part] = child
        node = child
    leaf = _existing_name(node, path)
    node[leaf] = value
    doc.positions[(*path[:-1], leaf)] = where


def _existing_name(node: dict[str, object], path: tuple[str, ...]) -> str:
    """The key the document already uses for this parameter (an alias, say), else the one given."""
    model = model_at(path[:-1]) if path[0] not in SECTION_ALIASES else model_at((SECTION_ALIASES[path[0]], *path[1:-1]))
    if model is not None:
        primary = accepted_names(model).get(path[-1])
        for name, other in accepted_names(model).items():
            if other == primary and name in node:
                return name
    return path[-1]


def _shorthand_key(section: str) -> str:
    return SCALAR_SHORTHANDS[section]
