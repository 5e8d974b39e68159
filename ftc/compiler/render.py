"""Renders a backend's Jinja templates: strict about undefined names, quoting done by filters."""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path
from typing import Any

import jinja2
import yaml

from ftc.backends.base import Backend
from ftc.compiler.write import Artifact
from ftc.spec import env_values

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
def environment(folder: Path) -> jinja2.Environment:
    """A Jinja environment for one template folder: strict, no HTML escaping, quoting filters.

    `sh` quotes one shell word; `sh_env` quotes an env.vars value whose `$NAME` references bash expands.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(sh=shell_quote, sh_env=env_values.to_bash, to_yaml=to_yaml, to_json=to_json)
    return env


def template_folder(backend: Backend) -> Path:
    """A backend's templates: its own `template_dir`, or `ftc/templates/<name>/` for built-ins."""
    return Path(backend.template_dir) if backend.template_dir else TEMPLATES / backend.name


def render_target(backend: Backend, variables: dict[str, Any]) -> list[Artifact]:
    """Render every `*.j2` template of a backend; a file starting with `#!` becomes executable.

    A template that renders to whitespace only (its target does not need the file for this spec)
    writes no file.
    """
    folder = template_folder(backend)
    artifacts = []
    for path in sorted(folder.rglob("*.j2")):
        name = path.relative_to(folder).as_posix()
        text = environment(folder).get_template(name).render(**variables)
        if not text.strip():
            continue
        mode = 0o755 if text.startswith("#!") else 0o644
        artifacts.append(Artifact(name.removesuffix(".j2"), text.encode("utf-8"), mode))
    return artifacts
