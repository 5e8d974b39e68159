"""Errors the runtime reports as one clean line (no traceback): they are the user's to fix."""

from __future__ import annotations

from ftc.errors import FtcError


class RuntimeUserError(FtcError):
    """Bad data, a missing model or tokenizer, an unsupported setting (exit 1)."""

    exit_code = 1


class UsageError(RuntimeUserError):
    """Bad command line or configuration: unknown parameter, invalid value, unreadable config (exit 2)."""

    exit_code = 2


class DataError(RuntimeUserError):
    """A data file that cannot be trained on; the message names the file (exit 1)."""
