"""Reading the data files: JSON Lines / JSON, CSV / TSV and Parquet, with errors that name the file.

Every task finds its split files with `spec_data_paths` and reads each with `read_table`, which
checks before any training starts that the file exists, is readable and has rows; the task then
checks the columns it needs (`require_columns`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftc.runtime.errors import DataError

if TYPE_CHECKING:
    from ftc.runtime.config import RunConfig

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
SPLITS = ("train", "validation", "test")
# Other names a preprocess_output folder may use for a split.
SPLIT_STEMS = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


@dataclass
class Table:
    """The rows of one data file, with their line numbers for messages."""

    path: Path
    rows: list[dict[str, Any]]
    lines: list[int] | None = None  # source line of each row, where the format has lines
    role: str = "train"

    def where(self, i: int) -> str:
        """`file:line` (or `file row N`) of row i."""
        if self.lines is not None:
            return f"{self.path}:{self.lines[i]}"
        return f"{self.path} row {i + 1}"

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, indices: Sequence[int], role: str) -> Table:
        lines = [self.lines[i] for i in indices] if self.lines is not None else None
        return Table(self.path, [self.rows[i] for i in indices], lines, role)


def read_table(path: Path, role: str = "train") -> Table:
    """Read one data file; DataError naming the file when it is missing, unreadable or empty."""
    if not path.exists():
        raise DataError(f"{role} data file not found: {path}")
    if path.is_dir():
        raise DataError(f"{role} data path is a folder, not a file: {path}")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{role} data file {path}: unknown format {path.suffix or '(no suffix)'!r}; "
            f"use one of {', '.join(FORMATS)}"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{role} data file {path} is empty")
    try:
        if fmt == "json":
            table = _read_json(path)
        elif fmt in ("csv", "tsv"):
            table = _read_csv(path, "\t" if fmt == "tsv" else ",")
        else:
            table = _read_parquet(path)
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"{role} data file {_first_non_utf8(path)}: is not UTF-8 text; save it as UTF-8") from None
    except Exception as exc:  # a parser's own error: report it with the file
        raise DataError(f"cannot read {role} data file {path}: {type(exc).__name__}: {exc}") from None
    table.role = role
    if not table.rows:
        raise DataError(f"{role} data file {path} has no rows")
    return table


def _first_non_utf8(path: Path) -> str:
    """`file:line:column (byte 0xNN)` of the first byte of `path` that is not UTF-8 (column counted in bytes)."""
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):  # a newline byte never falls inside a UTF-8 character
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"{path}:{number}:{exc.start + 1} (byte {line[exc.start]:#04x})"
    return str(path)


def _read_json(path: Path) -> Table:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" and stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        return Table(path, _records(data, path), None)
    if path.suffix.lower() == ".json" and stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSON Lines with a .json name
        if isinstance(data, dict):
            if list(data) == ["data"] and isinstance(data["data"], list):  # {"data": [...]}
                return Table(path, _records(data["data"], path), None)
            return Table(path, [data], [1])
    rows, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
        rows.append(row)
        lines.append(number)
    return Table(path, rows, lines)


def _records(data: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a list of JSON objects")
    return data


def _read_csv(path: Path, sep: str) -> Table:
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} is empty") from None
    rows = [{k: _native(v) for k, v in r.items()} for r in frame.to_dict("records")]
    return Table(path, rows, list(range(2, len(rows) + 2)))  # line 1 is the header


def _read_parquet(path: Path) -> Table:
    import pandas as pd

    frame = pd.read_parquet(path)
    return Table(path, [{k: _native(v) for k, v in r.items()} for r in frame.to_dict("records")], None)


def _native(value: Any) -> Any:
    """numpy scalars to Python; NaN (an empty CSV cell) to None."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def split_files(folder: Path) -> dict[str, Path]:
    """train / validation / test files of a preprocess_output folder (train.jsonl, validation.csv, ...)."""
    if not folder.is_dir():
        raise DataError(f"data folder not found: {folder}")
    found: dict[str, Path] = {}
    for split, stems in SPLIT_STEMS.items():
        for stem in stems:
            matches = sorted(p for p in folder.iterdir() if p.stem == stem and p.suffix.lower() in FORMATS)
            if len(matches) > 1:
                raise DataError(f"data folder {folder} has several {split} files: {', '.join(p.name for p in matches)}")
            if matches:
                found[split] = matches[0]
                break
    return found


def data_paths(train: Path | None, validation: Path | None, test: Path | None, folder: Path | None) -> dict[str, Path]:
    """The file of each split: individual files first, then the preprocess_output folder's."""
    from_folder = split_files(folder) if folder is not None else {}
    out = {k: v for k, v in {"train": train, "validation": validation, "test": test}.items() if v is not None}
    for split, path in from_folder.items():
        out.setdefault(split, path)
    if "train" not in out:
        if folder is not None:
            names = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
            raise DataError(f"data folder {folder} has no train file (train.jsonl, train.csv, ...); it holds: {names}")
        raise DataError("no training data: set data.train_file_path or data.preprocess_output")
    return out


def spec_data_paths(cfg: RunConfig) -> dict[str, Path]:
    """`data_paths` of the spec's data section: its train / validation / test files and preprocess_output."""
    keys = ("train_file_path", "validation_file_path", "test_file_path", "preprocess_output")
    return data_paths(*(cfg.path("data", key) for key in keys))


def require_columns(table: Table, columns: Sequence[str], what: str = "column") -> None:
    """DataError naming the file and row when a row lacks one of `columns` (or holds null there)."""
    for i, row in enumerate(table.rows):
        for col in columns:
            if col not in row:
                known = ", ".join(repr(k) for k in row) or "none"
                prefix = f"{table.role} data file {table.where(i)}"
                if i == 0:
                    raise DataError(f"{prefix}: missing {what} {col!r} (columns: {known})")
                raise DataError(f"{prefix}: row has no {what} {col!r} (columns: {known})")
            if row[col] is None:
                raise DataError(f"{table.role} data file {table.where(i)}: {what} {col!r} is empty")


def seeded_split(table: Table, ratio: float, seed: int) -> tuple[Table, Table]:
    """Hold out `ratio` of the rows (at least one, leaving at least one) with a seeded shuffle."""
    n = len(table)
    if n < 2:
        raise DataError(
            f"train data file {table.path} has {n} row: too few to hold out validation data; "
            "give data.validation_file_path"
        )
    n_val = min(n - 1, max(1, round(n * ratio)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val, train = sorted(order[:n_val]), sorted(order[n_val:])
    return table.subset(train, "train"), table.subset(val, "validation")
