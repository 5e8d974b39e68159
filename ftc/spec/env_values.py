"""Values of env.vars: literal text with references to the node's environment, the same on every target.

`$NAME` and `${NAME}` (NAME: a letter or `_`, then letters, digits or `_`) stand for that variable's value
in the environment the job starts in, on the node, at run time; an unset one is empty, as in bash. Every
other `$` is refused (lint rule FTC147): no escape for a literal `$` exists on every target (Ray expands
`$NAME` in runtime_env env_vars and has none).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

REFERENCE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def parts(value: str) -> list[tuple[str, str | None]]:
    """The value as (literal text, None) and ("", NAME) pieces, in order."""
    out: list[tuple[str, str | None]] = []
    at = 0
    for match in REFERENCE.finditer(value):
        if match.start() > at:
            out.append((value[at : match.start()], None))
        out.append(("", match.group("braced") or match.group("bare")))
        at = match.end()
    if at < len(value):
        out.append((value[at:], None))
    return out


def references(value: str) -> list[str]:
    """The names `value` refers to, in order, each once."""
    return list(dict.fromkeys(name for _, name in parts(value) if name))


def problem(value: str) -> str | None:
    """Why `value` cannot be passed the same way to every target (None when it can)."""
    for text, name in parts(value):
        if name is None and "$" in text:
            return (
                "holds a `$` that does not start a reference ($NAME or ${NAME}); a literal `$` cannot be passed "
                "the same way to every target (Ray expands it): set such a value in the cluster's environment"
            )
    return None


def to_bash(value: str) -> str:
    """A bash word that gives `value` with its references expanded (`${NAME:-}`: safe under `set -u`).

    Without references it is shlex-quoted, as every other value that reaches bash.
    """
    if not references(value):
        return shlex.quote(value)
    word = []
    for text, name in parts(value):
        if name:
            word.append(f"${{{name}:-}}")
        else:
            word.append(re.sub(r'([\\"$`])', r"\\\1", text))
    return '"' + "".join(word) + '"'


def braced(value: str) -> str:
    """`value` with every reference written `${NAME}`, the form Ray's runtime_env expands (and empties when unset)."""
    return "".join(f"${{{name}}}" if name else text for text, name in parts(value))


def expand(value: str, environ: Mapping[str, str]) -> str:
    """`value` with its references replaced from `environ` (empty when unset)."""
    return "".join(environ.get(name, "") if name else text for text, name in parts(value))
