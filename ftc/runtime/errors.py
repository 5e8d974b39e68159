"""Errors the runtime reports as one clean line (no traceback): they are the user's to fix."""

from __future__ import annotations

import shlex
from pathlib import Path

from ftc.errors import FtcError


class RuntimeUserError(FtcError):
    """Bad data, a missing model or tokenizer, an unsupported setting (exit 1)."""

    exit_code = 1


class UsageError(RuntimeUserError):
    """Bad command line or configuration: unknown parameter, invalid value, unreadable config (exit 2)."""

    exit_code = 2


class DataError(RuntimeUserError):
    """A data file that cannot be trained on; the message names the file (exit 1)."""


class Stopped(RuntimeUserError):
    """The run stopped on a signal (SIGTERM, SIGINT): exit 128 + the signal's number, as a shell reports it."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class DiskFull(RuntimeUserError):
    """No space left where an output was being written (exit 1); the message says where and how to resume."""


def resume_hint(out: Path | str) -> str:
    """How to continue a stopped run: the same command, this output folder (or remote URI), resume on."""
    return f"to resume, run the same command with --output_dir {shlex.quote(str(out))} --resume_from_checkpoint true"
