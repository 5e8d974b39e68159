"""The targets a spec may name, as the backends layer registers them; the spec layer never imports a backend.

`ftc.backends.registry` calls `register(backends)` when it is imported (the compiler and the CLI import it
first); `targets()` then gives every target's options model (the spec's `targets.<name>` section) and rules.
The runtime needs none of it: it validates a resolved config, which has no targets section.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ftc.spec.fields import Section


class Target(Protocol):
    """What the spec layer reads of a target: its options section and its lint rules (id -> rule)."""

    Options: type[Section]
    rules: Mapping[str, Any]


_provider: Callable[[], Mapping[str, Target]] | None = None


def register(provider: Callable[[], Mapping[str, Target]]) -> None:
    """Make `provider` (name -> target, in a stable order) the source of `targets()`."""
    global _provider
    _provider = provider


def targets() -> Mapping[str, Target]:
    """Every registered target by name."""
    if _provider is None:
        raise RuntimeError("no targets are registered: import ftc.backends.registry first (the compiler does)")
    return _provider()
