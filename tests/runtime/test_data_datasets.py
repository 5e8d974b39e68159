"""Data through Hugging Face datasets: Arrow tables, remote files, cached tokenization, cut texts, merged CSV rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ftc.runtime.data import (
    RowError,
    char_bound,
    map_rows,
    read_table,
    require_columns,
    seeded_split,
)
from ftc.runtime.errors import DataError, RuntimeUserError
from tests.services import s3_server  # noqa: F401

ROWS = [{"text": "a b", "label": "x"}, {"text": "c", "label": "y"}, {"text": "d, e", "label": "x"}]


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    return cache


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def cfg(workers: int | None = None, batch: int = 2) -> Any:
    data = SimpleNamespace(preprocessing_num_workers=workers, preprocess_batch_size=batch)
    return SimpleNamespace(spec=SimpleNamespace(data=data))


# --------------------------------------------------------------------------- Arrow tables


def test_a_table_is_a_memory_mapped_arrow_dataset_in_the_cache(tmp_path: Path, _datasets_cache: Path) -> None:
    table = read_table(jsonl(tmp_path / "t.jsonl", ROWS))
    assert table.dataset.cache_files, "read into memory, not memory-mapped from the cache"
    assert all(Path(f["filename"]).is_relative_to(_datasets_cache) for f in table.dataset.cache_files)
    assert table.rows == ROWS and len(table) == 3


def test_subsets_keep_the_file_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", "\n".join(json.dumps({"text": str(i), "label": i % 2}) for i in range(10)) + "\n")
    train, val = seeded_split(read_table(path), 0.3, seed=1)
    for part in (train, val):
        for i in range(len(part)):
            assert part.where(i) == f"{path}:{int(part.rows[i]['text']) + 1}"


def test_a_column_of_two_types_is_located(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": "x"}\n')
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value) == (
        f"{path}:3: column 'label' holds text here but a number on line 1; a column must hold values of one type"
    )


def test_null_and_missing_values_are_told_apart(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 2}\n{"text": null, "label": 1}\n')
    with pytest.raises(DataError, match=rf"{path}:3: column 'text' is empty"):
        require_columns(read_table(path), ["text", "label"])
    path = write(tmp_path / "u.jsonl", '{"text": "a", "label": 1}\n\n{"label": 1}\n')
    with pytest.raises(DataError, match=rf"{path}:3: row has no column 'text' \(columns: 'label'\)"):
        require_columns(read_table(path), ["text", "label"])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.jsonl", b'{"text": "a", "label": 1}\n{"text": "caf\xe9", "label": 2}\n', r"t.jsonl:2:14 \(byte 0xe9\): is not UTF-8"),
        ("t.csv", b'text,label\nfine,0\n"stray,1\nworld,0\nfoo,1\nbar" x,0\n', "rows at lines 3-6 merged into one"),
    ],
)
def test_a_refused_file_is_refused_again_not_served_from_the_cache(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    for _ in range(2):  # the checks run before datasets builds its cache: a refused file leaves none behind
        with pytest.raises(DataError, match=message):
            read_table(path)


# --------------------------------------------------------------------------- remote files


def test_data_is_read_from_s3(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import s3fs

    s3_server.apply(monkeypatch)
    fs = s3fs.S3FileSystem()
    fs.mkdir("ftc-data")
    fs.pipe("ftc-data/train.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS).encode())
    table = read_table("s3://ftc-data/train.jsonl", "train")
    assert table.rows == ROWS
    assert table.where(1) == "s3://ftc-data/train.jsonl:2"
    with pytest.raises(DataError, match="validation data file not found: s3://ftc-data/missing.jsonl"):
        read_table("s3://ftc-data/missing.jsonl", "validation")
    fs.pipe("ftc-data/bad.jsonl", b'{"text": "a", "label": 1}\n{"text": oops}\n')
    with pytest.raises(DataError, match="s3://ftc-data/bad.jsonl:2: not valid JSON"):
        read_table("s3://ftc-data/bad.jsonl")


def test_an_unknown_scheme_is_refused_before_reading() -> None:
    with pytest.raises(RuntimeUserError, match="train data file"):
        read_table("nosuch://bucket/train.jsonl", "train")


# --------------------------------------------------------------------------- tokenizing through Dataset.map


def _log_rows(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
    """A map function that records the rows it sees (in the file named by FTC_TEST_MAP_LOG)."""
    import os

    with open(os.environ["FTC_TEST_MAP_LOG"], "a") as f:
        f.write("".join(f"{i}\n" for i in indices))
    return {"length": [len(t) for t in batch["text"]]}


@pytest.mark.parametrize("workers", [None, 2])
def test_map_is_cached_by_fingerprint_and_a_rerun_skips_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int | None
) -> None:
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("FTC_TEST_MAP_LOG", str(calls))
    path = jsonl(tmp_path / "t.jsonl", ROWS)
    first = map_rows(read_table(path), _log_rows, cfg(workers), "measuring")
    assert first["length"] == [3, 1, 4]
    assert sorted(calls.read_text().split()) == ["0", "1", "2"]
    again = map_rows(read_table(path), _log_rows, cfg(workers), "measuring")  # a new process would do the same
    assert again["length"] == [3, 1, 4]
    assert sorted(calls.read_text().split()) == ["0", "1", "2"], "the rerun tokenized again"


def _log_rows_meeting(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
    """_log_rows, after waiting (5 s at most) for another process to be in the same map: two processes that
    are not kept apart meet there and both tokenize."""
    import os
    import time

    folder = Path(os.environ["FTC_TEST_MAP_LOG"]).parent
    (folder / f"mapping-{os.getpid()}").touch()
    deadline = time.monotonic() + 5
    while len(list(folder.glob("mapping-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    return _log_rows(batch, indices)


NODE_SCRIPT = """
import sys
from pathlib import Path
from tests.runtime.test_data_datasets import _log_rows_meeting, cfg
from ftc.runtime.data import map_rows, read_table
print(map_rows(read_table(Path(sys.argv[1])), _log_rows_meeting, cfg(batch=1000), "measuring")["length"])
"""


def test_the_processes_of_a_node_tokenize_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import subprocess
    import sys

    calls = tmp_path / "calls.txt"
    path = jsonl(tmp_path / "t.jsonl", ROWS)
    env = {**os.environ, "FTC_TEST_MAP_LOG": str(calls), "LOCAL_WORLD_SIZE": "2", "PYTHONPATH": str(Path.cwd())}
    procs = [
        subprocess.Popen([sys.executable, "-c", NODE_SCRIPT, str(path)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs) and all("[3, 1, 4]" in out for out in outputs)
    assert sorted(calls.read_text().split()) == ["0", "1", "2"], "both processes tokenized"


def _refuse_second(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
    if 1 in indices:
        raise RowError(1, "cannot render the chat: roles must alternate")
    return {"n": indices}


@pytest.mark.parametrize("workers", [None, 2])
def test_a_row_error_names_the_file_line(tmp_path: Path, workers: int | None) -> None:
    path = write(tmp_path / "t.jsonl", json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(DataError, match=rf"train data file {path}:3: cannot render the chat: roles must alternate"):
        map_rows(read_table(path), _refuse_second, cfg(workers, batch=1), "rendering")


def test_tokenizer_fingerprint_is_stable_so_tokenized_data_comes_from_the_cache(
    tmp_path: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoTokenizer

    from ftc.runtime.tasks.text_classification import _Encoder

    path = jsonl(tmp_path / "t.jsonl", ROWS)
    config = cfg()
    config.spec.data.__dict__.update(sentence1_key="text", sentence2_key=None, label_key="label", pad_to_max_length=False)
    label2id = {"x": 0, "y": 1}
    with caplog.at_level(logging.WARNING):
        first = _Encoder(config, AutoTokenizer.from_pretrained(tiny_model), label2id, 16)(read_table(path))
        again = _Encoder(config, AutoTokenizer.from_pretrained(tiny_model), label2id, 16)(read_table(path))
    assert "hashed" not in caplog.text  # datasets warns when a function cannot be fingerprinted
    assert first["input_ids"] == again["input_ids"] and again["labels"] == [0, 1, 0]
    mapped = {f["filename"] for f in again.cache_files if "cache-" in Path(f["filename"]).name}
    assert mapped and mapped == {f["filename"] for f in first.cache_files if "cache-" in Path(f["filename"]).name}


def test_long_texts_are_cut_before_tokenizing_with_the_same_ids_and_a_warning(
    tmp_path: Path, tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from transformers import AutoTokenizer

    from ftc.runtime.tasks.text_classification import _Encoder

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    bound = char_bound(tokenizer, 16)
    words = "alpha beta gamma " * (bound // 8)  # far longer than the bound
    rows = [{"text": words, "label": "x"}, {"text": "alpha beta", "label": "y"}]
    config = cfg()
    config.spec.data.__dict__.update(sentence1_key="text", sentence2_key=None, label_key="label", pad_to_max_length=False)
    with caplog.at_level(logging.WARNING, logger="ftc.runtime"):
        out = _Encoder(config, tokenizer, {"x": 0, "y": 1}, 16)(read_table(jsonl(tmp_path / "t.jsonl", rows)))
    assert out["input_ids"] == tokenizer([r["text"] for r in rows], truncation=True, max_length=16)["input_ids"]
    assert f"1 of 2 rows hold more than {bound} characters in column 'text'" in caplog.text


@pytest.mark.parametrize("fmt", ["text", "chat"])
def test_causal_lm_samples_of_huge_rows_keep_their_first_tokens(tmp_path: Path, fmt: str) -> None:
    from ftc.runtime.tasks.causal_lm import CHAT, TEXT, _Encode, encode_chat, encode_text
    from tests.runtime.tiny_lm import chat_rows, make_lm_tokenizer

    tokenizer = make_lm_tokenizer(tmp_path / "tok")
    length = 24
    row = chat_rows(1, seed=0)[0]
    huge = " ".join([row["messages"][0]["content"]] * 5000)  # about 100 times the character bound
    if fmt == "text":
        value, full = huge, encode_text(tokenizer, huge)
    else:
        value = [{"role": "user", "content": huge}, row["messages"][1]]
        full = encode_chat(tokenizer, value, tagged=False)
    encode = _Encode(tokenizer, "x", TEXT if fmt == "text" else CHAT, False, length)
    assert len(huge) > 10 * encode.bound
    out = encode({"x": [value, value]}, [0, 1])
    assert out["input_ids"][0] == full[0][:length] and out["labels"][0] == full[1][:length]
    assert out["long"] == [True, True]


# --------------------------------------------------------------------------- CSV lines


def test_csv_lines_are_real_file_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", 'text,label\n"two\nlines",1\n\nc,\n')
    table = read_table(path)
    assert table.rows[0] == {"text": "two\nlines", "label": 1}  # a quoted line break stays accepted
    with pytest.raises(DataError, match=rf"{path}:5: column 'label' is empty"):
        require_columns(table, ["text", "label"])


@pytest.mark.parametrize("suffix,sep", [(".csv", ","), (".tsv", "\t")])
def test_rows_merged_by_an_unbalanced_quote_are_refused(tmp_path: Path, suffix: str, sep: str) -> None:
    lines = ["text,label", "fine,0", '"stray,1', "world,0", "foo,1", 'bar" x,0', "last,1"]
    path = write(tmp_path / f"t{suffix}", "\n".join(line.replace(",", sep) for line in lines) + "\n")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert str(err.value) == (
        f"train data file {path}: rows at lines 3-6 merged into one: a quote opened on line 3 is not closed "
        'before line 6; close the quote (or double a quote inside a quoted cell: "")'
    )


# --------------------------------------------------------------------------- a run


def test_tokenizing_in_worker_processes_trains_the_same(
    compile_config: Any, run_inprocess: Any, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = compile_config()
    outs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / f"cache-{workers}"))  # nothing shared between the runs
        out = project / f"out-{workers}"
        code, _, err = run_inprocess(config, "--output_dir", str(out), "--preprocessing_num_workers", workers)
        assert code == 0, err[-3000:]
        outs[workers] = out
    assert any("_of_00002" in p.name for p in (tmp_path / "cache-2").rglob("cache-*.arrow")), "not tokenized by 2 workers"
    metrics = [json.loads((out / "metrics.json").read_text()) for out in outs.values()]
    losses = [{k: v for k, v in m.items() if "loss" in k or "accuracy" in k} for m in metrics]
    assert losses[0] == losses[1] and "eval_loss" in losses[0] and "train_loss" in losses[0]
