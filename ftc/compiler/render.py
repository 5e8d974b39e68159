"""Renders a backend's Jinja templates: strict about undefined names, quoting done by filters."""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path
from typing import Any

import jinja2
import yaml

from ftc.compiler.write import Artifact

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def shell_quote(value: Any) -> str:
    """One shell word for `value`, whatever characters it holds."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return shlex.quote(str(value))


def to_yaml(value: Any) -> str:
    """YAML text from a serializer, never from pasted strings."""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=False, width=1 << 16)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=True)


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(sh=shell_quote, to_yaml=to_yaml, to_json=to_json)
    return env


def template_names(target: str) -> list[str]:
    """The templates of a target: every `*.j2` in its folder, sorted."""
    folder = TEMPLATES / target
    return sorted(p.relative_to(TEMPLATES).as_posix() for p in folder.rglob("*.j2"))


def render_target(target: str, variables: dict[str, Any]) -> list[Artifact]:
    """Render every template of `target`; a file starting with `#!` becomes executable."""
    artifacts = []
    for name in template_names(target):
        text = environment().get_template(name).render(**variables)
        relative = name[len(target) + 1 : -len(".j2")]
        mode = 0o755 if text.startswith("#!") else 0o644
        artifacts.append(Artifact(relative, text.encode("utf-8"), mode))
    return artifacts
