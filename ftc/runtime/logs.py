"""The log of one run: console and `ftc_runtime.log` handlers, secrets masked, and JSON-safe values.

`log` ("ftc.runtime") reaches the console and the log file; `train_log` ("ftc.runtime.train": the
Trainer's loss, learning rate and evaluation records) reaches the log file only, since the
progress bar already shows them on the console.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

from ftc.runtime.config import ensure_output_dir
from ftc.spec.secrets import mask_secrets

log = logging.getLogger("ftc.runtime")
train_log = logging.getLogger("ftc.runtime.train")

LOG_FILE = "ftc_runtime.log"


class RunLogs:
    """Console and log-file handlers of one run, removed again at the end (the runtime may run in-process)."""

    def __init__(self, out_dir: Path | None, is_main: bool) -> None:
        self.handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self.file: Path | None = None
        self.file_handler: logging.Handler | None = None
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(_MaskedFormatter("[ftc] %(message)s"))
        console.setLevel(logging.INFO if is_main else logging.WARNING)
        self._add(log, console)
        log.setLevel(logging.INFO)
        train_log.setLevel(logging.INFO)
        train_log.propagate = False
        if out_dir is not None and is_main:
            ensure_output_dir(out_dir)
            self.file = out_dir / LOG_FILE
            fh = _QuietFileHandler(self.file, encoding="utf-8")
            fh.setFormatter(_MaskedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            fh.setLevel(logging.INFO)
            self.file_handler = fh
            self._add(log, fh)
            self._add(train_log, fh)
            self._add(logging.getLogger("transformers"), fh, level=logging.WARNING)

    def _add(self, logger: logging.Logger, handler: logging.Handler, level: int | None = None) -> None:
        if level is not None:
            handler = _LevelFilterHandler(handler, level)
        logger.addHandler(handler)
        self.handlers.append((logger, handler))

    def to_file(self, level: int, message: str) -> None:
        """Write `message` to the log file only (the console gets errors once, from __main__)."""
        if self.file_handler is not None:
            self.file_handler.handle(log.makeRecord(log.name, level, __file__, 0, message, (), None))

    def close(self) -> None:
        """Remove and close every handler this run added."""
        for logger, handler in self.handlers:
            logger.removeHandler(handler)
            handler.close()
        self.handlers.clear()


class _MaskedFormatter(logging.Formatter):
    """Formats a record with every token-shaped substring masked: message, arguments and traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class _QuietFileHandler(logging.FileHandler):
    """The log file: a record that cannot be written (a full disk) is dropped, not printed with a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class _LevelFilterHandler(logging.Handler):
    """Forwards records at or above `level` to another handler (shared file, own threshold)."""

    def __init__(self, target: logging.Handler, level: int) -> None:
        super().__init__(level)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


def jsonable(value: Any) -> Any:
    """`value` as JSON can hold it: string keys, 0-d tensors and arrays as numbers, NaN and infinity as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value
