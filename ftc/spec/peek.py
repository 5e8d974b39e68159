"""A cheap look at local data and model files for lint: columns, label values, model limits.

Reads at most a few thousand rows, with the standard library only. Anything it cannot read (a
remote path, Parquet, a hub id, a name too long for the file system, an unreadable or deeply
nested file) is reported as unknown, and the data-aware rules stay silent; it never raises.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

MAX_ROWS = 5000
# What probing a path or reading a file can raise besides OSError: expanduser of an unknown
# user (RuntimeError), a NUL byte in a name (ValueError), a deeply nested document (RecursionError).
_UNREADABLE = (OSError, RuntimeError, ValueError, csv.Error)
# A model given as a hub id (org/name) rather than a path or a URI.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


@dataclass
class DataPeek:
    """Columns and some values of a data file; `complete` when `rows` are all of its rows."""

    columns: set[str] = field(default_factory=set)
    rows: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = False

    def values(self, column: str) -> set[str]:
        return {json.dumps(r[column], sort_keys=True) if not isinstance(r[column], str) else r[column] for r in self.rows if column in r}


def local_path(base_dir: Path, value: str | None) -> Path | None:
    """The file a spec value names, if it is a local path that exists."""
    if not value or "://" in value:
        return None
    try:
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base_dir / path
        return path if path.exists() else None
    except _UNREADABLE:
        return None


def looks_like_hub_id(value: str) -> bool:
    """`name` or `org/name`, as a hub id is written (a local folder of that name may exist too: see local_path)."""
    return bool(_HUB_ID.match(value)) and not value.startswith((".", "/", "~")) and "://" not in value


def is_file(path: Path) -> bool:
    """Whether `path` is a regular file (False for anything that cannot be checked)."""
    try:
        return path.is_file()
    except _UNREADABLE:
        return False


def find_file(folder: Path, stem: str) -> Path | None:
    """The first file `<stem>.*` in `folder`, if it is a readable folder."""
    try:
        return next((p for p in sorted(folder.glob(f"{stem}.*")) if p.is_file()), None) if folder.is_dir() else None
    except _UNREADABLE:
        return None


def peek_data(path: Path) -> DataPeek | None:
    """Columns and the first rows of a JSON Lines or CSV/TSV file; None when unreadable."""
    if path.suffix not in (".jsonl", ".json", ".csv", ".tsv"):
        return None
    try:
        with path.open(encoding="utf-8") as fh:
            rows, complete = _json_rows(fh) if path.suffix in (".jsonl", ".json") else _csv_rows(fh, path.suffix)
    except _UNREADABLE:
        return None
    # a CSV row longer than its header puts the extra values under the key None
    columns = {k for r in rows for k in r if isinstance(k, str)}
    return DataPeek(columns=columns, rows=rows, complete=complete)


def _json_rows(fh: IO[str]) -> tuple[list[dict[str, Any]], bool]:
    """The object rows among the first MAX_ROWS non-blank lines, and whether that was the whole file."""
    rows, seen = [], 0
    for line in fh:
        if not line.strip():
            continue
        if seen == MAX_ROWS:
            return rows, False
        seen += 1
        row = json.loads(line)
        if isinstance(row, dict):
            rows.append(row)
    return rows, True


def _csv_rows(fh: IO[str], suffix: str) -> tuple[list[dict[str, Any]], bool]:
    reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
    rows = list(itertools.islice(reader, MAX_ROWS))
    return rows, next(reader, None) is None


def count_lines(path: Path, cap: int) -> int | None:
    """The number of lines of `path`, counting at most `cap`; None when it cannot be read."""
    count = 0
    try:
        with path.open("rb") as fh:
            for count, _ in enumerate(fh, 1):
                if count >= cap:
                    break
    except _UNREADABLE:
        return None
    return count


def read_json(path: Path) -> Any:
    """The JSON document in `path`, or None when it is not a regular file, unreadable or not JSON."""
    if not is_file(path):
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except _UNREADABLE:
        return None


def model_config(base_dir: Path, model: str) -> dict[str, Any] | None:
    """The config.json of a local model folder, if there is one."""
    folder = local_path(base_dir, model)
    loaded = read_json(folder / "config.json") if folder is not None else None
    return loaded if isinstance(loaded, dict) else None


def model_family(base_dir: Path, model: str) -> str | None:
    """The model_type of a local model's config.json, when it is a string."""
    family = (model_config(base_dir, model) or {}).get("model_type")
    return family if isinstance(family, str) else None
