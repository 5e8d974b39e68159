"""Reading the data files: JSON Lines / JSON, CSV / TSV and Parquet, with errors that name the file.

Every task finds its split files with `spec_data_paths` and reads each with `read_table`, which loads it
through Hugging Face `datasets` into a memory-mapped Arrow `Dataset` (checking before any training starts
that the file exists, is readable and has rows); the task then checks the columns it needs
(`require_columns`). A location is a local path or a URI (s3://, gs://, abfs://, hf://datasets/..., see
ftc.runtime.storage).

The Arrow cache: the folder HF_DATASETS_CACHE names when it is set, else datasets' default
(~/.cache/huggingface/datasets). A file read again unchanged, and its tokenization (`Dataset.map`, cached by
fingerprint), come from there.

Line numbers for messages are found only when a message needs them, by scanning the file then (JSON Lines:
the n-th non-blank line; CSV / TSV: the real line where a record begins, the header being line 1 and quoted
line breaks counted). CSV / TSV files are scanned once as they are read, to refuse rows merged by an
unbalanced quote (`merged_rows`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from ftc.runtime.errors import DataError, RuntimeUserError

if TYPE_CHECKING:
    from ftc.runtime.config import RunConfig

log = logging.getLogger("ftc.runtime")

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
SPLITS = ("train", "validation", "test")
# Other names a preprocess_output folder may use for a split.
SPLIT_STEMS = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}

Location = Path | str  # a local path, or a URI as written (str)


@dataclass
class Table:
    """One data file as an Arrow `Dataset` (memory-mapped), with the source line of each row for messages.

    `index` maps the rows of a subset to those of the file (None: row i is the file's row i).
    """

    path: Location
    dataset: Any  # datasets.Dataset
    role: str = "train"
    fmt: str = "json"
    index: Sequence[int] | None = None
    _lines: Sequence[int] | None = field(default=None, repr=False)

    @property
    def suffix(self) -> str:
        return _suffix(self.path)

    @property
    def rows(self) -> Rows:
        """The rows as dicts (read from Arrow as they are used)."""
        return Rows(self.dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def column(self, key: str) -> Iterator[Any]:
        """The values of column `key`, in order, read from Arrow a batch at a time (far faster than row by row)."""
        if not hasattr(self.dataset, "select_columns"):  # a plain list of rows
            yield from (row[key] for row in self.dataset)
            return
        for batch in self.dataset.select_columns([key]).iter(batch_size=1000):
            yield from batch[key]

    def file_row(self, i: int) -> int:
        """The file's row number (from 0) of row i."""
        return self.index[i] if self.index is not None else i

    def where(self, i: int) -> str:
        """`file:line` (or `file row N`) of row i."""
        row = self.file_row(i)
        lines = self.lines()
        if lines is not None and row < len(lines):
            return f"{self.path}:{lines[row]}"
        return f"{self.path} row {row + 1}"

    def lines(self) -> Sequence[int] | None:
        """The source line of each of the file's rows, where the format has lines (scanned on first use)."""
        if self._lines is None:
            self._lines = _scan_lines(self.path, self.fmt)
        return self._lines or None

    def subset(self, indices: Sequence[int], role: str) -> Table:
        rows = [self.file_row(i) for i in indices]
        return Table(self.path, self.dataset.select(indices), role, self.fmt, rows, self._lines)


class Rows(Sequence[dict[str, Any]]):
    """A list-like view of a Dataset's rows."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self.dataset[j] for j in range(*i.indices(len(self)))]
        return self.dataset[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.dataset)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)


def _suffix(location: Location) -> str:
    return PurePosixPath(str(location).split("?")[0]).suffix.lower()


def cache_dir() -> str | None:
    """datasets' cache folder: HF_DATASETS_CACHE when set (read at each call), else datasets' default."""
    return os.environ.get("HF_DATASETS_CACHE") or None


# --------------------------------------------------------------------------- reading


def read_table(location: Location, role: str = "train") -> Table:
    """Read one data file; DataError naming the file when it is missing, unreadable, empty or malformed."""
    fmt = _check_location(location, role)
    lines = None
    if not _prepared(location, fmt):  # checks whose failure leaves no Arrow cache behind, so a cached file passed them
        if fmt != "parquet":
            check_utf8(location, role)
        if fmt in ("csv", "tsv"):
            lines = csv_record_lines(location, "\t" if fmt == "tsv" else ",", role)
    dataset = _load(location, fmt, role)
    table = Table(location, dataset, role, fmt, None, lines)
    if len(table) == 0:
        raise DataError(f"{role} data file {location} has no rows")
    return table


def refuse_streaming(cfg: RunConfig, task: str) -> None:
    """RuntimeUserError for data.streaming in a task that needs its whole training file first."""
    if cfg.spec.data.streaming:
        raise RuntimeUserError(f"data.streaming: task {task} does not stream its data (only causal_lm does); turn streaming off")


def stream_table(location: Location, role: str = "train") -> Table:
    """The file as a stream (datasets' IterableDataset, read as it is iterated: nothing is prepared on disk);
    the file is checked as `read_table` does, its rows only as training reaches them."""
    fmt = _check_location(location, role)
    dataset = _load_dataset(location, fmt, streaming=True)
    return Table(location, dataset, role, fmt)


def _check_location(location: Location, role: str) -> str:
    """The file's format, after checking that it exists, is a file, is not empty and has a known suffix."""
    exists, is_dir, size = _stat(location, role)
    if not exists:
        raise DataError(f"{role} data file not found: {location}")
    if is_dir:
        raise DataError(f"{role} data path is a folder, not a file: {location}")
    suffix = _suffix(location)
    fmt = FORMATS.get(suffix)
    if fmt is None:
        raise DataError(f"{role} data file {location}: unknown format {suffix or '(no suffix)'!r}; use one of {', '.join(FORMATS)}")
    if size == 0:
        raise DataError(f"{role} data file {location} is empty")
    return fmt


def _stat(location: Location, role: str) -> tuple[bool, bool, int]:
    """(exists, is a folder, size) of a path or a URI (through its fsspec filesystem)."""
    if isinstance(location, Path):
        exists = location.exists()
        return exists, exists and location.is_dir(), location.stat().st_size if exists else 0
    from ftc.runtime import storage

    storage.check_usable(location, f"{role} data file")
    fs, inner = storage.filesystem(location)
    if not fs.exists(inner):
        return False, False, 0
    info = fs.info(inner)
    return True, info.get("type") == "directory", int(info.get("size") or 0)


def _load(location: Location, fmt: str, role: str) -> Any:
    """The file as a Dataset; a parser's failure is located (`_diagnose`) and reported as a DataError."""
    try:
        dataset = _load_dataset(location, fmt)
    except DataError:
        raise
    except Exception as exc:  # a parser's own error: find the line, else report it with the file
        raise _diagnose(location, fmt, role, exc) from None
    if fmt == "json" and _suffix(location) == ".json" and dataset.column_names == ["data"] and len(dataset) == 1:
        if isinstance(dataset[0]["data"], list):  # {"data": [...]}
            dataset = _load_dataset(location, fmt, field="data")
    return dataset


def _load_dataset(location: Location, fmt: str, **kwargs: Any) -> Any:
    import datasets

    builder, kwargs = _builder_args(location, fmt, kwargs)
    with _offline_means_the_hub(location):
        return datasets.load_dataset(builder, split="train", **kwargs)


def _builder_args(location: Location, fmt: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """datasets' builder name and load_dataset arguments for a file of format `fmt`."""
    import datasets

    datasets.disable_progress_bars()
    kwargs = {**kwargs, "data_files": str(location), "cache_dir": cache_dir()}
    if fmt in ("csv", "tsv"):
        kwargs.update(sep="\t" if fmt == "tsv" else ",", keep_default_na=False, na_values=[""])
    if isinstance(location, str):
        from ftc.runtime import storage

        kwargs["storage_options"] = storage.storage_options(location)
    return ("csv" if fmt == "tsv" else fmt), kwargs


def _prepared(location: Location, fmt: str) -> bool:
    """Whether datasets' cache already holds this file as Arrow (same path and modification time, or etag)."""
    import datasets

    builder, kwargs = _builder_args(location, fmt, {})
    try:
        with _offline_means_the_hub(location):
            prepared = datasets.load_dataset_builder(builder, **kwargs)
    except Exception:  # noqa: BLE001 - the load reports what is wrong with the file
        return False
    return Path(prepared.cache_dir, "dataset_info.json").is_file()


@contextmanager
def _offline_means_the_hub(location: Location) -> Iterator[None]:
    """HF_HUB_OFFLINE keeps datasets off the Hugging Face Hub; datasets applies it to every URL, so for an
    object store's URI (s3://, gs://, ...) it is lifted while that file is read."""
    import datasets

    offline = datasets.config.HF_HUB_OFFLINE
    lift = isinstance(location, str) and not location.startswith("hf://")
    if lift:
        datasets.config.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = offline


@contextmanager
def _open_binary(location: Location) -> Iterator[IO[bytes]]:
    if isinstance(location, Path):
        with location.open("rb") as f:
            yield f
    else:
        from ftc.runtime import storage

        fs, inner = storage.filesystem(location)
        with fs.open(inner, "rb") as f:
            yield f


def _diagnose(location: Location, fmt: str, role: str, exc: Exception) -> DataError:
    """The DataError for a file the parser refused: the first non-UTF-8 byte, the first bad JSON line, or the
    parser's own message with the file."""
    if where := _first_non_utf8(location):
        return DataError(f"{role} data file {where}: is not UTF-8 text; save it as UTF-8")
    if fmt == "json" and (_suffix(location) == ".jsonl" or not _starts_with(location, b"[")):
        if problem := _json_lines_problem(location):
            return DataError(problem)
    elif fmt == "json":
        with _open_binary(location) as f:
            try:
                json.load(io.TextIOWrapper(f, encoding="utf-8"))
            except json.JSONDecodeError as err:
                return DataError(f"{location}:{err.lineno}: not valid JSON: {err.msg}")
        return DataError(f"{location}: expected a list of JSON objects")
    if "EmptyDataError" in _chain_names(exc):
        return DataError(f"data file {location} is empty")
    if "corresponds to no data" in str(exc):
        return DataError(f"{role} data file {location} has no rows")
    return DataError(f"cannot read {role} data file {location}: {_root_message(exc)}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _chain_names(exc: BaseException) -> set[str]:
    return {type(e).__name__ for e in _chain(exc)}


def _root_message(exc: BaseException) -> str:
    root = list(_chain(exc))[-1]
    return f"{type(root).__name__}: {root}"


def _starts_with(location: Location, prefix: bytes) -> bool:
    with _open_binary(location) as f:
        return f.read(4096).lstrip().startswith(prefix)


def check_utf8(location: Location, role: str) -> None:
    """DataError at the first byte that is not UTF-8 (Arrow's JSON reader would replace it silently); a fast
    pass over the bytes, and a line-by-line one only to locate a bad byte."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with _open_binary(location) as f:
            while chunk := f.read(1 << 22):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{role} data file {_first_non_utf8(location) or location}: is not UTF-8 text; save it as UTF-8") from None


def _first_non_utf8(location: Location) -> str | None:
    """`file:line:column (byte 0xNN)` of the first byte that is not UTF-8 (column counted in bytes); None if all is."""
    with _open_binary(location) as f:
        for number, line in enumerate(f, start=1):  # a newline byte never falls inside a UTF-8 character
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"{location}:{number}:{exc.start + 1} (byte {line[exc.start]:#04x})"
    return None


_JSON_KINDS = {str: "text", int: "a number", float: "a number", bool: "true/false", list: "a list", dict: "an object"}


def _json_lines_problem(location: Location) -> str | None:
    """The first line of a JSON Lines file that is not a JSON object, or whose value of a key has another JSON
    type than on an earlier line (Arrow columns hold one type); None when every line is fine."""
    first_kind: dict[str, tuple[str, int]] = {}
    with _open_binary(location) as f:
        for number, raw in enumerate(f, start=1):
            line = raw.decode("utf-8")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                return f"{location}:{number}: not valid JSON: {exc.msg}"
            if not isinstance(row, dict):
                return f"{location}:{number}: expected a JSON object per line, got {type(row).__name__}"
            for key, value in row.items():
                if value is None:
                    continue
                kind = _JSON_KINDS.get(type(value), type(value).__name__)
                seen = first_kind.setdefault(key, (kind, number))
                if seen[0] != kind:
                    return (
                        f"{location}:{number}: column {key!r} holds {kind} here but {seen[0]} on line {seen[1]}; "
                        "a column must hold values of one type"
                    )
    return None


# --------------------------------------------------------------------------- line numbers


def _scan_lines(location: Location, fmt: str) -> Sequence[int]:
    """The source line of each row: JSON Lines' non-blank lines, CSV / TSV records; empty where rows have no
    lines (a JSON array)."""
    if fmt in ("csv", "tsv"):
        return csv_record_lines(location, "\t" if fmt == "tsv" else ",", "data")
    if fmt != "json" or _starts_with(location, b"["):
        return array("q")
    if _suffix(location) == ".json" and _starts_with(location, b"{"):
        with _open_binary(location) as f:
            try:
                data = json.load(io.TextIOWrapper(f, encoding="utf-8"))
            except json.JSONDecodeError:
                data = None  # JSON Lines with a .json name
        if isinstance(data, dict):
            return array("q") if list(data) == ["data"] else array("q", [1])
    lines = array("q")
    with _open_binary(location) as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                lines.append(number)
    return lines


def csv_record_lines(location: Location, sep: str, role: str) -> Sequence[int]:
    """The line where each record of a CSV / TSV file begins (the header is line 1, quoted line breaks count);
    DataError where an unbalanced quote merged rows (`merged_rows`)."""
    lines = array("q")
    with _open_binary(location) as f:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        reader = csv.reader(text, delimiter=sep)
        start, width = 1, 0
        try:
            for record in reader:
                if record and start > 1:
                    lines.append(start)
                    if problem := merged_rows(record, start, reader.line_num, width, sep):
                        raise DataError(f"{role} data file {location}: {problem}")
                elif record:
                    width = len(record)
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError):
            return lines  # the parser's own error is reported by read_table
    return lines


def merged_rows(record: list[str], first: int, last: int, width: int, sep: str) -> str | None:
    """The message for a record of lines first..last whose quoted cell holds what looks like further rows: its
    line breaks are followed by lines of the file's column count (`width`); None for a plain quoted text."""
    if last == first or width < 2:
        return None
    for cell in record:
        pieces = cell.split("\n")
        if len(pieces) < 3:
            continue
        middle = [p.rstrip("\r") for p in pieces[1:-1]]
        if all(len(next(csv.reader([p], delimiter=sep), [])) == width for p in middle):
            return (
                f"rows at lines {first}-{last} merged into one: a quote opened on line {first} is not closed "
                f"before line {last}; close the quote (or double a quote inside a quoted cell: \"\")"
            )
    return None


# --------------------------------------------------------------------------- the spec's files


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


def data_paths(
    train: Location | None, validation: Location | None, test: Location | None, folder: Path | None
) -> dict[str, Location]:
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


def spec_data_paths(cfg: RunConfig) -> dict[str, Location]:
    """`data_paths` of the spec's data section: its train / validation / test files (paths or URIs) and
    preprocess_output (a local folder)."""
    files = [cfg.uri("data", key) or cfg.path("data", key) for key in ("train_file_path", "validation_file_path", "test_file_path")]
    if uri := cfg.uri("data", "preprocess_output"):
        raise DataError(f"data.preprocess_output must be a local folder, not {uri}; name the files with data.*_file_path")
    return data_paths(*files, cfg.path("data", "preprocess_output"))


# --------------------------------------------------------------------------- checks


def require_columns(table: Table, columns: Sequence[str], what: str = "column") -> None:
    """DataError naming the file and row when a row lacks one of `columns` (or holds null there)."""
    known = ", ".join(repr(k) for k in table.dataset.column_names) or "none"
    for col in columns:
        if col not in table.dataset.column_names:
            raise DataError(f"{table.role} data file {table.where(0)}: missing {what} {col!r} (columns: {known})")
    for col in columns:
        i = first_null(table, col)
        if i is None:
            continue
        prefix = f"{table.role} data file {table.where(i)}"
        if not _row_has_key(table, i, col):
            row_keys = ", ".join(repr(k) for k, v in table.dataset[i].items() if v is not None) or "none"
            if i == 0:
                raise DataError(f"{prefix}: missing {what} {col!r} (columns: {row_keys})")
            raise DataError(f"{prefix}: row has no {what} {col!r} (columns: {row_keys})")
        raise DataError(f"{prefix}: {what} {col!r} is empty")


def first_null(table: Table, column: str) -> int | None:
    """The first row whose `column` is null, read from Arrow without making Python objects."""
    import pyarrow.compute as pc

    data = table.dataset.with_format("arrow")[column]
    if data.null_count == 0:
        return None
    return int(pc.index(pc.is_null(data), True).as_py())


def _row_has_key(table: Table, i: int, key: str) -> bool:
    """Whether row i's source writes `key` (JSON Lines: a null value is written, a missing key is not)."""
    lines = table.lines()
    if table.fmt != "json" or not lines:
        return True
    number = lines[table.file_row(i)]
    with _open_binary(table.path) as f:
        for n, raw in enumerate(f, start=1):
            if n == number:
                row = json.loads(raw)
                return isinstance(row, dict) and key in row
    return True


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


# --------------------------------------------------------------------------- tokenizing


class RowError(Exception):
    """Raised by a `map_rows` function for the row at `index` of the Dataset it maps (picklable, so it crosses
    datasets' worker processes); `map_rows` turns it into a DataError naming the file and line."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(index, message)
        self.index, self.message = index, message


def workers(cfg: RunConfig) -> int | None:
    """datasets' map num_proc: data.preprocessing_num_workers, None (in process) when unset or 1."""
    n = cfg.spec.data.preprocessing_num_workers
    return n if n and n > 1 else None


@contextmanager
def node_first() -> Iterator[None]:
    """One process of the node at a time (a lock file in the datasets cache): the first tokenizes and writes
    the cache, the others then find it there. Nothing to wait for in a single process."""
    if int(os.environ.get("LOCAL_WORLD_SIZE", "1")) <= 1:
        yield
        return
    import fcntl

    import datasets

    folder = Path(cache_dir() or datasets.config.HF_DATASETS_CACHE)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "ftc-tokenize.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def map_rows(table: Table, function: Any, cfg: RunConfig, what: str) -> Any:
    """`table.dataset.map(function, batched=True, with_indices=True)` into new columns (the file's are
    dropped), cached by fingerprint (a rerun reads the cache), node by node (`node_first`); a RowError
    becomes a DataError at the row's file:line."""
    with node_first():
        try:
            return table.dataset.map(
                function,
                batched=True,
                with_indices=True,
                batch_size=cfg.spec.data.preprocess_batch_size,
                num_proc=workers(cfg),
                remove_columns=table.dataset.column_names,
                desc=f"{what} ({table.role})",
            )
        except RowError as err:
            raise DataError(f"{table.role} data file {table.where(err.index)}: {err.message}") from None


def char_bound(tokenizer: Any, length: int) -> int:
    """Characters of text kept before tokenizing to at most `length` tokens: twice what `length` tokens of the
    tokenizer's longest vocabulary entry could cover, plus 1000, so a text under the limit is never cut (its
    ids stay the same) while a long one costs bounded memory."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    longest = max((len(token) for token in vocab), default=16)
    return 2 * length * max(longest, 16) + 1000


def count_longer(table: Table, column: str, bound: int) -> int:
    """Rows whose text in `column` holds more than `bound` characters (counted in Arrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    data = table.dataset.with_format("arrow")[column]
    if not (pa.types.is_string(data.type) or pa.types.is_large_string(data.type)):
        return 0
    return int(pc.sum(pc.greater(pc.utf8_length(data), bound)).as_py() or 0)


def warn_cut(table: Table, columns: Sequence[str], bound: int, length: int) -> None:
    """Log how many rows hold a text longer than `bound` characters, cut to that before tokenizing."""
    for column in columns:
        if n := count_longer(table, column, bound):
            log.warning(
                "%s data file %s: %d of %d rows hold more than %d characters in column %r; cut to that before "
                "tokenizing (far more than max_seq_length %d tokens)",
                table.role, table.path, n, len(table), bound, column, length,
            )
