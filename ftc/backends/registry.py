"""Finds the targets: the modules of this package, then the `ftc.backends` entry-point group."""

from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
from importlib.metadata import entry_points

from ftc.backends.base import Backend

ENTRY_POINT_GROUP = "ftc.backends"
_NOT_TARGETS = {"base", "registry"}


def _builtin() -> list[type[Backend]]:
    import ftc.backends as package

    found = []
    for module in pkgutil.iter_modules(package.__path__):
        if module.name in _NOT_TARGETS or module.name.startswith("_"):
            continue
        found.append(importlib.import_module(f"ftc.backends.{module.name}").BACKEND)
    return found


def _plugins() -> list[type[Backend]]:
    return [ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)]


@functools.cache
def backends() -> dict[str, Backend]:
    """Every registered target by name, built-ins first, in a stable order."""
    found: dict[str, Backend] = {}
    for cls in sorted(_builtin(), key=lambda c: c.name) + sorted(_plugins(), key=lambda c: c.name):
        found.setdefault(cls.name, cls())
    return found


def get_backend(name: str) -> Backend:
    """The target called `name`; KeyError names the closest and the known ones."""
    known = backends()
    if name not in known:
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise KeyError(f"unknown target {name!r}{hint}; known targets: {', '.join(known)}")
    return known[name]
