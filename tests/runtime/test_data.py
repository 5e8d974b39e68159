"""Reading data files (JSON Lines, JSON, CSV, TSV, Parquet) and the errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftc.runtime.data import data_paths, read_table, require_columns, seeded_split, split_files
from ftc.runtime.errors import DataError

ROWS = [{"text": "a b", "label": "x"}, {"text": "c", "label": "y"}, {"text": "d, e", "label": "x"}]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_with_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", "\n".join(json.dumps(r) for r in ROWS[:2]) + "\n\n" + json.dumps(ROWS[2]) + "\n")
    table = read_table(path)
    assert table.rows == ROWS
    assert table.where(2) == f"{path}:4"


@pytest.mark.parametrize("content", [json.dumps(ROWS), json.dumps({"data": ROWS}), "\n".join(json.dumps(r) for r in ROWS)])
def test_json_forms(tmp_path: Path, content: str) -> None:
    assert read_table(write(tmp_path / "t.json", content)).rows == ROWS


def test_csv_tsv_parquet(tmp_path: Path) -> None:
    import pandas as pd

    csv = write(tmp_path / "t.csv", 'text,label\n"a b",1\nc,0\n"d, e",1\n')
    tsv = write(tmp_path / "t.tsv", "text\tlabel\na b\t1\nc\t0\nd, e\t1\n")
    pq = tmp_path / "t.parquet"
    pd.DataFrame({"text": ["a b", "c", "d, e"], "label": [1, 0, 1]}).to_parquet(pq)
    expected = [{"text": "a b", "label": 1}, {"text": "c", "label": 0}, {"text": "d, e", "label": 1}]
    for path in (csv, tsv, pq):
        rows = read_table(path).rows
        assert rows == expected, path
        assert all(type(r["label"]) is int for r in rows)
    assert read_table(csv).where(1) == f"{csv}:3"  # line 1 is the header


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"validation data file not found: {tmp_path / 'v.jsonl'}"):
        read_table(tmp_path / "v.jsonl", "validation")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("e.jsonl", "", "is empty"),
    ("e.jsonl", "\n\n", "has no rows"),
    ("e.csv", "", "is empty"),
    ("e.csv", "text,label\n", "has no rows"),
])
def test_empty_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_bad_json_line_is_located(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": 1}\n{"text": oops}\n')
    with pytest.raises(DataError, match=rf"{path}:2: not valid JSON"):
        read_table(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("t.jsonl", b'{"text": "a", "label": 1}\n{"text": "caf\xe9", "label": 2}\n'),
        ("t.json", b'[{"text": "a", "label": 1},\n {"text": "caf\xe9", "label": 2}]\n'),
        ("t.csv", b"text,label\na,1\ncaf\xe9,2\n"),
        ("t.tsv", b"text\tlabel\na\t1\ncaf\xe9\t2\n"),
    ],
    ids=["jsonl", "json", "csv", "tsv"],
)
def test_text_that_is_not_utf8_is_located_by_line(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    line = 3 if name.endswith("sv") else 2
    column = content.splitlines()[line - 1].index(b"\xe9") + 1
    with pytest.raises(DataError) as err:
        read_table(path, "validation")
    assert str(err.value) == f"validation data file {path}:{line}:{column} (byte 0xe9): is not UTF-8 text; save it as UTF-8"


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown format '.txt'"):
        read_table(write(tmp_path / "t.txt", "hello"))


def test_require_columns_names_file_and_row(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n')
    table = read_table(path, "train")
    with pytest.raises(DataError) as err:
        require_columns(table, ["text", "label"])
    assert f"train data file {path}:2: row has no column 'label'" in str(err.value)
    table = read_table(write(tmp_path / "u.jsonl", '{"sentence": "a", "label": 1}\n'), "validation")
    with pytest.raises(DataError, match=r"u.jsonl:1: missing column 'text' \(columns: 'sentence', 'label'\)"):
        require_columns(table, ["text", "label"])


def test_seeded_split_is_deterministic(tmp_path: Path) -> None:
    rows = [{"text": str(i), "label": i % 2} for i in range(50)]
    table = read_table(write(tmp_path / "t.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
    train, val = seeded_split(table, 0.2, seed=7)
    again_train, again_val = seeded_split(table, 0.2, seed=7)
    _, other_val = seeded_split(table, 0.2, seed=8)
    assert len(val) == 10 and len(train) == 40
    assert val.rows == again_val.rows and train.rows == again_train.rows
    assert val.rows != other_val.rows
    assert sorted(r["text"] for r in [*train.rows, *val.rows]) == sorted(r["text"] for r in rows)
    assert val.role == "validation"


def test_preprocess_output_folder(tmp_path: Path) -> None:
    folder = tmp_path / "pre"
    folder.mkdir()
    write(folder / "train.jsonl", json.dumps(ROWS[0]) + "\n")
    write(folder / "validation.csv", "text,label\na,x\n")
    write(folder / "notes.md", "ignored")
    assert split_files(folder) == {"train": folder / "train.jsonl", "validation": folder / "validation.csv"}
    explicit = tmp_path / "mine.jsonl"
    paths = data_paths(None, explicit, None, folder)
    assert paths == {"train": folder / "train.jsonl", "validation": explicit}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="has no train file"):
        data_paths(None, None, None, empty)
