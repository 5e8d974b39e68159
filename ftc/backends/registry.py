"""Finds the targets: the modules of this package that define BACKEND, then the `ftc.backends` entry-point group.

A module of this package without BACKEND (base, plan, registry, kubernetes: what targets share) is not a target.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
from importlib.metadata import entry_points

from ftc.backends.base import Backend
from ftc.spec import targets as spec_targets

ENTRY_POINT_GROUP = "ftc.backends"


def _builtin() -> list[type[Backend]]:
    """The BACKEND of each module of this package that has one (private `_` modules are not looked at)."""
    import ftc.backends as package

    found = []
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.startswith("_"):
            continue
        backend = getattr(importlib.import_module(f"ftc.backends.{module.name}"), "BACKEND", None)
        if backend is not None:
            found.append(backend)
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


spec_targets.register(backends)  # the spec layer reads each target's options and rules from here
