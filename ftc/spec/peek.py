"""A cheap look at local data and model files for lint: columns, label values, model limits.

Reads at most a few thousand rows, with the standard library only; anything it cannot read
(a remote path, Parquet, a hub id) is reported as unknown and the data-aware rules stay silent.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_ROWS = 5000


@dataclass
class DataPeek:
    """Columns and some values of a data file."""

    columns: set[str] = field(default_factory=set)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def values(self, column: str) -> set[str]:
        return {json.dumps(r[column], sort_keys=True) if not isinstance(r[column], str) else r[column] for r in self.rows if column in r}


def local_path(base_dir: Path, value: str | None) -> Path | None:
    """The file a spec value names, if it is a local path that exists."""
    if not value or "://" in value:
        return None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    return path if path.exists() else None


def peek_data(path: Path) -> DataPeek | None:
    """Columns and the first rows of a JSON Lines or CSV/TSV file; None when unreadable."""
    try:
        with path.open(encoding="utf-8") as fh:
            if path.suffix in (".jsonl", ".json"):
                rows = []
                for i, line in enumerate(fh):
                    if i >= MAX_ROWS:
                        break
                    if line.strip():
                        row = json.loads(line)
                        if isinstance(row, dict):
                            rows.append(row)
            elif path.suffix in (".csv", ".tsv"):
                reader = csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
                rows = [row for _, row in zip(range(MAX_ROWS), reader)]
            else:
                return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error):
        return None
    columns = set().union(*(r.keys() for r in rows)) if rows else set()
    return DataPeek(columns=columns, rows=rows)


def model_config(base_dir: Path, model: str) -> dict[str, Any] | None:
    """The config.json of a local model folder, if there is one."""
    folder = local_path(base_dir, model)
    config = folder / "config.json" if folder and folder.is_dir() else None
    if config is None or not config.is_file():
        return None
    try:
        loaded = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None
