"""Imported settings as spec YAML text: one setting a line, its origin as a comment, in the spec's order."""

from __future__ import annotations

from typing import Any

import yaml

from ftc.importers.base import Imported, Setting
from ftc.spec.model import SpecBase

INDENT = "  "


def spec_text(imported: Imported) -> str:
    """The spec YAML of `imported`, byte-identical for the same input: a header, the settings, the unmapped ones."""
    lines = [f"# Imported by `ftc import` from {_one_line(imported.source)} ({imported.tool})."]
    lines += _tree_lines(_ordered(imported.settings), 0)
    if imported.unmapped:
        lines += ["", f"# Not imported: {imported.tool} settings with no ftc equivalent."]
        for item in imported.unmapped:
            lines.append(f"#   {item.name}: {_one_line(_flow(item.value))}  -- {_one_line(item.reason)}")
    return "\n".join(lines) + "\n"


def _ordered(settings: list[Setting]) -> list[Setting]:
    """Settings sorted by the spec's order of sections and of fields within them (others after, as given)."""
    sections = list(SpecBase.model_fields)
    position = {key: i for i, key in enumerate(sections)}

    def rank(setting: Setting) -> tuple[int, int]:
        head = setting.key[0]
        if head not in position:
            return len(sections), 0
        fields = _field_names(head)
        leaf = setting.key[1] if len(setting.key) > 1 else ""
        return position[head], fields.index(leaf) if leaf in fields else len(fields)

    return sorted(settings, key=rank)  # stable: equal ranks keep the importer's order


def _field_names(section: str) -> list[str]:
    annotation = SpecBase.model_fields[section].annotation
    return list(getattr(annotation, "model_fields", {}))


def _tree_lines(settings: list[Setting], depth: int) -> list[str]:
    """Lines for settings that share the first `depth` parts of their key: nested sections opened once each."""
    lines: list[str] = []
    groups: dict[str, list[Setting]] = {}
    for setting in settings:
        groups.setdefault(setting.key[depth], []).append(setting)
    for name, group in groups.items():
        leaf = next((s for s in group if len(s.key) == depth + 1), None)
        if leaf is not None:
            if len(group) > 1:
                raise ValueError(f"{'.'.join(leaf.key)} is both a value and a section")
            lines.append(f"{INDENT * depth}{_flow(name)}: {_flow(leaf.value)}  # {_one_line(leaf.origin)}")
        else:
            lines.append(f"{INDENT * depth}{_flow(name)}:")
            lines += _tree_lines(group, depth + 1)
    return lines


def _flow(value: Any) -> str:
    """`value` as one line of YAML, quoted where YAML needs it (yaml.safe_dump decides); text with line breaks
    is double-quoted, its breaks escaped."""
    text = _dump(value, None)
    return _dump(value, '"') if "\n" in text else text


def _dump(value: Any, style: str | None) -> str:
    text = yaml.safe_dump(
        value, default_flow_style=True, default_style=style, width=1 << 30, allow_unicode=True, sort_keys=False
    )
    return text.removesuffix("\n").removesuffix("\n...")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())

