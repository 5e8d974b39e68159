"""Rules on the environment: no literal secrets in the spec, and env.vars values that expand on every target."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ftc.spec import env_values
from ftc.spec.rules.registry import KeyPath, rule
from ftc.spec.secrets import looks_like_secret

if TYPE_CHECKING:
    from ftc.spec.resolved import Resolved


@rule("FTC106", "error", "literal secret in the spec")
def _literal_secret(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Tokens, keys and passwords must not be written in a spec (as values or as keys): name the environment
    variable in env.secrets. lint.ignore cannot silence this rule."""
    for path, value in _strings(r.doc.data, ()):
        if looks_like_secret(value):
            yield path, "looks like a literal token or key; put it in an environment variable listed in env.secrets"


def _strings(value: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    """Every string of a parsed document, mapping keys included, with its key path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                yield (*path, k), k
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


@rule("FTC147", "error", "a `$` in env.vars that is not a reference")
def _env_value_dollars(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """In env.vars, `$NAME` and `${NAME}` expand at run time, on the node, on every target (empty when unset).
    Any other `$` is refused: no target-independent escape exists (Ray expands `$NAME` in its env_vars)."""
    for name, value in r.spec.env.vars.items():
        problem = env_values.problem(value)
        if problem:
            yield ("env", "vars", name), problem
