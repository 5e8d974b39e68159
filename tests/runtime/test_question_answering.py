"""Extractive question answering: SQuAD metrics, chunking, post-processing, bad data, and training for real."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from ftc.runtime.tasks.question_answering import (
    Chunker,
    Example,
    exact_match_score,
    f1_score,
    normalize_answer,
    predict_answers,
    squad_scores,
)
from tests.runtime.tiny import FILLER, write_jsonl
from tests.runtime.tiny_qa import make_qa_tokenizer, make_tiny_qa_model, qa_row, qa_rows

# 2400 examples of 12-40 words (1-3 chunks of 32 tokens), a fifth unanswerable; 32 per batch.
QA_SPEC = """\
task: question_answering
model: ./models/qa
data:
  train_file_path: data/train.jsonl
  validation_file_path: data/validation.jsonl
  max_seq_length: 32
  doc_stride: 8
  max_answer_length_in_tokens: 4
training:
  max_steps: 600
  per_device_train_batch_size: 32
  per_device_eval_batch_size: 128
  seed: 0
optimizer:
  optim: adamw_torch
  learning_rate: 0.003
  warmup_steps: 30
evaluation:
  evaluation_strategy: "no"
checkpointing:
  output_dir: out
  save_as_mlflow_model: false
resources:
  cpus_per_process: 1               # a tiny model: a second thread only waits (and slows a busy machine)
"""


@pytest.fixture(scope="session")
def tiny_qa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_qa_model(tmp_path_factory.mktemp("qa") / "model")


@pytest.fixture(scope="session")
def qa_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qa_data")
    write_jsonl(root / "train.jsonl", qa_rows(2400, seed=0, unanswerable=0.2))
    write_jsonl(root / "validation.jsonl", qa_rows(200, seed=1, unanswerable=0.2))
    write_jsonl(root / "test.jsonl", qa_rows(150, seed=2, unanswerable=0.2))
    return root


@pytest.fixture
def project(tmp_path: Path, tiny_qa: Path, qa_data: Path) -> Path:
    """A spec folder with models/qa (the session's tiny QA model) and a copy of the QA data in data/.

    It replaces conftest's classification project, so compile_config and run_inprocess work here.
    """
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    (root / "models" / "qa").symlink_to(tiny_qa, target_is_directory=True)
    (root / "data").mkdir()
    for src in qa_data.iterdir():
        (root / "data" / src.name).write_bytes(src.read_bytes())
    return root


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # -> PreTrainedTokenizerFast
    return make_qa_tokenizer(tmp_path_factory.mktemp("qa_tok"))


def _metrics(out: Path) -> dict[str, float]:
    return json.loads((out / "metrics.json").read_text())


def _example(row: dict) -> Example:
    return Example(row["question"], row["context"], tuple(row["answers"]["text"]), tuple(row["answers"]["answer_start"]))


def _context_tokens(features, f: int) -> list[int]:
    """The token positions of chunk f that belong to the context."""
    return [i for i, span in enumerate(features.offsets[f]) if span is not None]


def _label(features, f: int) -> tuple[int, int]:
    row = features.dataset[f]
    return row["start_positions"], row["end_positions"]


def _peaked(features, spans: dict[int, tuple[int, int]], width: int = 32):  # -> (start logits, end logits)
    """Logits of every chunk: 0 everywhere, 5 at [CLS]; 10 at the start and end token of `spans` (chunk -> span)."""
    import numpy as np

    start, end = np.zeros((len(features.example_index), width)), np.zeros((len(features.example_index), width))
    for f, c in enumerate(features.cls_index):
        start[f, c] = end[f, c] = 5.0
    for f, (s, e) in spans.items():
        start[f, s], end[f, e] = 10.0, 10.0
    return start, end


# --------------------------------------------------------------------------- SQuAD metrics by hand


def test_normalize_answer_as_the_squad_script() -> None:
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear & the fig.") == "apple pear fig"
    assert normalize_answer("theatre Anne") == "theatre anne"  # articles only as whole words
    assert normalize_answer("  A ") == ""


def test_exact_and_f1_as_the_squad_script() -> None:
    assert exact_match_score("the Denver Broncos", "Denver Broncos.") == 1.0
    assert exact_match_score("Broncos", "Denver Broncos") == 0.0
    # "cat sat" against "cat sat on mat": 2 shared tokens, precision 1, recall 1/2, F1 2/3.
    assert f1_score("The cat sat", "a cat sat on the mat") == pytest.approx(2 / 3)
    # Shared tokens count with multiplicity: "x x y" and "x y y" share one x and one y: P = R = F1 = 2/3.
    assert f1_score("x x y", "x y y") == pytest.approx(2 / 3)
    assert f1_score("nothing shared", "Denver Broncos") == 0.0
    assert f1_score("", "Denver Broncos") == 0.0
    # The best over an example's gold answers, then the mean over the examples, x 100.
    assert squad_scores(["Denver Broncos", "Broncos"], [["Broncos Denver", "Denver Broncos"], ["the Broncos"]]) == (
        pytest.approx({"exact": 100.0, "f1": 100.0})
    )
    # exact (0 + 1) / 2; f1 (2/3 + 1) / 2 ("mat" matches "the mat", the better of the two golds).
    scores = squad_scores(["cat sat", "mat"], [["cat sat on mat"], ["the mat", "rug"]])
    assert scores == pytest.approx({"exact": 50.0, "f1": 100 * (2 / 3 + 1) / 2})


def test_unanswerable_scores_as_the_squad_v2_script() -> None:
    """No gold answer: 1 when nothing (or only punctuation and articles) is predicted, else 0."""
    assert squad_scores(["", "the", "cat"], [[], [], []]) == pytest.approx({"exact": 200 / 3, "f1": 200 / 3})
    assert squad_scores([], []) == {"exact": 0.0, "f1": 0.0}
    with pytest.raises(ValueError):
        squad_scores(["a"], [])


# --------------------------------------------------------------------------- chunks and post-processing


def test_long_context_answer_in_the_second_chunk_maps_back(tokenizer) -> None:
    """A 40-word context in 32-token chunks: 24 context tokens each, 8 shared; the answer (word 31) is in the second only."""
    row = qa_row(random.Random(3), 40, at=30)
    answer, words = row["answers"]["text"][0], row["context"].split()
    features = Chunker(tokenizer, 32, 8, pad=False, batch=1000)([_example(row)])
    assert features.example_index == [0, 0]
    first, second = _context_tokens(features, 0), _context_tokens(features, 1)
    assert len(first) == 24 and len(second) == 24
    # The second chunk starts 8 words before the first one ends: words 16-39.
    assert features.offsets[1][second[0]] == features.offsets[0][first[16]]
    assert row["context"][features.offsets[1][second[-1]][0] :] == words[-1]
    # Labels: the no-answer position in the first chunk, the answer's token in the second.
    assert _label(features, 0) == (features.cls_index[0],) * 2
    s, e = _label(features, 1)
    assert s == e == second[31 - 16]
    assert row["context"][features.offsets[1][s][0] : features.offsets[1][e][1]] == answer
    assert tokenizer.convert_ids_to_tokens(features.dataset[1]["input_ids"][s]) == answer
    # Post-processing finds it there and maps it back to the characters of the context.
    start, end = _peaked(features, {1: (s, e)})
    for null_answers in (False, True):
        assert predict_answers(features, start, end, 20, 4, null_answers) == {0: answer}


def test_an_answer_across_a_chunk_boundary_is_labelled_where_it_is_whole(tokenizer) -> None:
    words = [FILLER[i] for i in range(40)]
    context = " ".join(words)
    # Words 22-25: beyond the first chunk's end (word 23), whole in the second (words 16-39).
    text = " ".join(words[22:26])
    example = Example("what comes after cat ?", context, (text,), (context.index(text),))
    features = Chunker(tokenizer, 32, 8, pad=True, batch=1000)([example])
    labels = [_label(features, f) for f in range(2)]
    assert labels[0] == (features.cls_index[0],) * 2
    s, e = labels[1]
    assert e - s == 3 and context[features.offsets[1][s][0] : features.offsets[1][e][1]] == text
    assert len(features.dataset[0]["input_ids"]) == 32  # pad_to_max_length


def test_post_processing_keeps_valid_spans_only(tokenizer) -> None:
    """Question tokens, spans that end before they start and spans longer than the limit are never answers."""
    import numpy as np

    row = qa_row(random.Random(5), 12, at=10)
    features = Chunker(tokenizer, 32, 8, pad=False, batch=1000)([_example(row)])
    c = _context_tokens(features, 0)
    start, end = np.full((1, 32), -50.0), np.full((1, 32), -50.0)
    start[0, 1] = end[0, 1] = 100.0  # a question token: not in the context
    start[0, c[9]], end[0, c[8]] = 50.0, 50.0  # would end before it starts
    start[0, c[0]], end[0, c[6]] = 40.0, 40.0  # 7 tokens: more than max_tokens 3
    start[0, c[1]], end[0, c[3]] = 30.0, 30.0  # the best valid span: words 1-3
    words = row["context"].split()
    assert predict_answers(features, start, end, 20, 3, False) == {0: " ".join(words[1:4])}
    # max_tokens 7 admits words 0-6 (80), which beats words 1-3 (60).
    assert predict_answers(features, start, end, 20, 7, False) == {0: " ".join(words[0:7])}
    # n_best 1 pairs only the best start and the best end (both the question token): no span is left.
    assert predict_answers(features, start, end, 1, 3, False) == {0: ""}


def test_unanswerable_examples_predict_the_empty_answer(tokenizer) -> None:
    """The no-answer score of an example is its lowest [CLS] score over its chunks; it wins when above the best span."""
    rows = [qa_row(random.Random(7), 40, at=30), qa_row(random.Random(8), 40, answerable=False)]
    features = Chunker(tokenizer, 32, 8, pad=False, batch=1000)([_example(r) for r in rows])
    assert features.example_index == [0, 0, 1, 1]
    # An unanswerable example trains on the [CLS] position in every chunk (as chunks without the answer do).
    cls = features.cls_index
    assert [_label(features, f) for f in (0, 2, 3)] == [(cls[0], cls[0]), (cls[2], cls[2]), (cls[3], cls[3])]
    start, end = _peaked(features, {1: _label(features, 1)})  # the answer: 10 + 10 in chunk 1; [CLS] 5 + 5
    start[0, cls[0]] = end[0, cls[0]] = 15.0  # [CLS] 30 in chunk 0, which does not hold the answer
    weak = _context_tokens(features, 3)[2]
    start[3, weak] = end[3, weak] = 1.0  # the unanswerable example's best span: 1 + 1
    weak_word = rows[1]["context"][features.offsets[3][weak][0] : features.offsets[3][weak][1]]
    # Example 0: no-answer min(30, 10) = 10 < 20: the span. Example 1: no-answer 10 > 2: empty.
    assert predict_answers(features, start, end, 20, 4, True) == {0: rows[0]["answers"]["text"][0], 1: ""}
    # Without unanswerable training data a span is always predicted.
    assert predict_answers(features, start, end, 20, 4, False) == {0: rows[0]["answers"]["text"][0], 1: weak_word}
    # A [CLS] above the best span in every chunk (11 + 11 > 20) empties the answerable example too.
    for f, c in enumerate(cls):
        start[f, c] = end[f, c] = 11.0
    assert predict_answers(features, start, end, 20, 4, True) == {0: "", 1: ""}


def test_metrics_of_a_prefix_of_the_chunks(tokenizer) -> None:
    """evaluation.max_eval_steps scores the first chunks only: the examples they belong to are scored."""
    from ftc.runtime.tasks.question_answering import SquadMetrics

    rows = [qa_row(random.Random(i), 12) for i in range(3)]
    features = Chunker(tokenizer, 32, 8, pad=False, batch=2)([_example(r) for r in rows])  # batches of 2 examples
    assert features.example_index == [0, 1, 2]
    spans = {f: _label(features, f) for f in range(3)}
    start, end = _peaked(features, spans)
    metrics = SquadMetrics(features, n_best=20, max_tokens=4, null_answers=False)
    assert metrics(SimpleNamespace(predictions=(start, end))) == {"exact": 100.0, "f1": 100.0}
    start, end = _peaked(features, {**spans, 2: (spans[2][0] - 1, spans[2][1] - 1)})  # example 2: the marker word...
    assert metrics(SimpleNamespace(predictions=(start, end)))["exact"] == pytest.approx(200 / 3)
    assert metrics(SimpleNamespace(predictions=(start[:2], end[:2]))) == {"exact": 100.0, "f1": 100.0}  # ...unscored


def test_the_served_model_answers_from_the_chunk_that_holds_the_answer(tokenizer) -> None:
    """The MLflow model compares the lowest [CLS] score over the windows with the best span, as evaluation does:
    a window without the answer, sure of [CLS], does not empty the answer another window finds."""
    import torch

    from ftc.runtime.mlflow_model_code import FtcModel

    row = qa_row(random.Random(3), 40, at=30)  # the answer is in the second window only
    features = Chunker(tokenizer, 32, 8, pad=False, batch=1000)([_example(row)])
    answer_token = _label(features, 1)[0]

    def model(input_ids, **_: object) -> SimpleNamespace:
        start, end = torch.zeros(input_ids.shape), torch.zeros(input_ids.shape)
        start[0, 0] = end[0, 0] = 10.0  # window 0: [CLS]
        start[1, answer_token] = end[1, answer_token] = 9.0  # window 1: the answer, a little less sure
        return SimpleNamespace(start_logits=start, end_logits=end)

    served = FtcModel()
    served.task, served.tokenizer, served.model = "question_answering", tokenizer, model
    served.config = {"max_seq_length": 32, "doc_stride": 8, "max_answer_length": 4, "null_answers": True}
    got = served.predict(None, {"question": row["question"], "context": row["context"]})
    assert list(got["answer"]) == row["answers"]["text"]


# --------------------------------------------------------------------------- chunks through the datasets cache


def _chunks(prepared) -> dict[str, tuple]:  # noqa: ANN001 - a Prepared
    """Each split's model inputs, and the chunks' examples, offsets and no-answer positions (validation, test)."""
    out = {}
    for split, metrics in (("eval", prepared.compute_metrics), ("test", prepared.test_compute_metrics)):
        f = metrics.features
        out[split] = (f.dataset.to_dict(), f.example_index, f.offsets, f.cls_index)
    out["train"] = (prepared.train_dataset.to_dict(),)
    return out


def _map_files(dataset) -> set[str]:  # noqa: ANN001 - a datasets.Dataset
    return {f["filename"] for f in dataset.cache_files if Path(f["filename"]).name.startswith("cache-")}


def test_a_second_prepare_reads_the_chunks_from_the_cache(
    compile_config, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The chunks come from a `Dataset.map` cached by fingerprint: preparing the same files again (a rerun, the
    next process of a node) reads them from datasets' cache and tokenizes nothing; they are the chunks of the
    examples chunked in memory, and worker processes (data.preprocessing_num_workers) make the same ones."""
    from ftc.runtime.config import load_config
    from ftc.runtime.tasks import get_task

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    chunked: list[int] = []
    encode = Chunker.encode

    def counting_encode(self: Chunker, questions: list[str], contexts: list[str], answers: list) -> dict:
        chunked.append(len(questions))
        return encode(self, questions, contexts, answers)

    monkeypatch.setattr(Chunker, "encode", counting_encode)
    spec = QA_SPEC.replace("  doc_stride: 8\n", "  doc_stride: 8\n  test_file_path: data/test.jsonl\n")
    cfg = load_config(compile_config(spec))
    task = get_task("question_answering")
    with caplog.at_level(logging.WARNING):
        first = task.prepare(cfg, task.load_data(cfg))
        assert sum(chunked) == 2400 + 200 + 150
        chunked.clear()
        again = task.prepare(cfg, task.load_data(cfg))
    assert chunked == [], "the second prepare tokenized again"
    assert "hashed" not in caplog.text  # datasets warns when it cannot fingerprint the map function
    for split in ("train_dataset", "eval_dataset", "test_dataset"):
        files = _map_files(getattr(again, split))
        assert files and files == _map_files(getattr(first, split))
        assert all(Path(name).is_relative_to(cache) for name in files)
    assert _chunks(again) == _chunks(first)
    data = task.load_data(cfg)
    in_memory = Chunker(first.tokenizer, 32, 8, pad=False, batch=1000)(data.validation)
    assert _chunks(first)["eval"] == (
        in_memory.dataset.to_dict(), in_memory.example_index, in_memory.offsets, in_memory.cls_index
    )
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache-2"))  # else the in-process chunks are reused
    cfg = load_config(compile_config(spec.replace("data:\n", "data:\n  preprocessing_num_workers: 2\n"), build="b2"))
    workers = task.prepare(cfg, task.load_data(cfg))
    assert any("_of_00002" in name for name in _map_files(workers.eval_dataset)), "not chunked by 2 workers"
    assert _chunks(workers) == _chunks(first)


def test_an_answer_no_chunk_holds_whole_is_reported_at_its_line(
    tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Words 12-27 of a 40-word context: longer than doc_stride, so neither chunk (words 0-23, 16-39) holds it;
    the chunks train as unanswerable, and the warning names the row's file and line."""
    from ftc.runtime.data import read_table
    from ftc.runtime.tasks.question_answering import AnswerKeys, ChunkRows, chunk_table

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    context = " ".join(FILLER[i] for i in range(40))
    text = " ".join(context.split()[12:28])
    lost = {"question": "what comes after cat ?", "context": context, "answers": {"text": [text], "answer_start": [context.index(text)]}}
    path = write_jsonl(tmp_path / "validation.jsonl", [GOOD, lost])
    rows = ChunkRows(Chunker(tokenizer, 32, 8, pad=False, batch=1000), "question", "context", AnswerKeys("answers", "text", "answer_start"))
    cfg = SimpleNamespace(spec=SimpleNamespace(data=SimpleNamespace(preprocessing_num_workers=None, preprocess_batch_size=1000)))
    with caplog.at_level(logging.WARNING, logger="ftc.runtime"):
        chunks = chunk_table(read_table(path, "validation"), rows, cfg)
    assert chunks["example"] == [0, 1, 1] and chunks["lost"] == [False, True, False]
    assert chunks["start_positions"][1:] == chunks["end_positions"][1:] == chunks["cls"][1:]
    assert "1 of 2 examples have no chunk that holds their whole answer" in caplog.text
    assert f"the first: validation data file {path}:2" in caplog.text


# --------------------------------------------------------------------------- data forms and bad data


def test_answer_forms_and_a_seeded_split(compile_config, project: Path) -> None:
    """SQuAD lists, a single answer without lists, JSON text in a CSV file; no validation file: a split."""
    import pandas as pd

    from ftc.runtime.config import load_config
    from ftc.runtime.tasks import get_task

    rows = qa_rows(20, seed=4)
    write_jsonl(project / "data" / "scalar.jsonl", [
        {**r, "answers": {"text": r["answers"]["text"][0], "answer_start": r["answers"]["answer_start"][0]}} for r in rows
    ])
    pd.DataFrame([{**r, "answers": json.dumps(r["answers"])} for r in rows]).to_csv(project / "data" / "rows.csv", index=False)
    write_jsonl(project / "data" / "lists.jsonl", rows)
    task = get_task("question_answering")
    loaded = {}
    for name in ("lists.jsonl", "scalar.jsonl", "rows.csv"):
        spec = QA_SPEC.replace("data/train.jsonl", f"data/{name}").replace("  validation_file_path: data/validation.jsonl\n", "")
        data = task.load_data(load_config(compile_config(spec)))
        assert data.split_from_train and (len(data.train), len(data.validation)) == (18, 2)
        loaded[name] = data.train + data.validation
    assert loaded["lists.jsonl"] == loaded["scalar.jsonl"] == loaded["rows.csv"]
    assert {e.answers for e in loaded["lists.jsonl"]} == {(r["answers"]["text"][0],) for r in rows}


GOOD = {"question": "what comes after cat ?", "context": "kabo cat dume", "answers": {"text": ["dume"], "answer_start": [9]}}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([GOOD, {"question": "q", "answers": GOOD["answers"]}], ":2: row has no column 'context'"),
        ([{**GOOD, "answers": {"text": ["dume"], "answer_start": [8]}}],
         ":1: answer 'dume' is not at answer_start 8 of the context (the context has ' dum' there); the text occurs at offset 9"),
        ([{**GOOD, "answers": {"text": ["zebra"], "answer_start": [0]}}], "; the text is not in the context"),
        ([{**GOOD, "answers": ["dume"]}], ":1: column 'answers' must be an object {'text': [...], 'answer_start': [...]}, not list"),
        ([{**GOOD, "answers": "dume"}], ":1: column 'answers' must be an object {'text': [...], 'answer_start': [...]}, not text"),
        ([{**GOOD, "answers": {"text": ["dume"]}}], ":1: the answers ('answers') have no 'answer_start' (keys: 'text')"),
        ([{**GOOD, "answers": {"text": ["dume", "cat"], "answer_start": [9]}}], ":1: the answers have 2 'text' but 1 'answer_start'"),
        ([{**GOOD, "answers": {"text": ["dume"], "answer_start": [-1]}}], "must be a character offset (an integer >= 0), not -1"),
        ([{**GOOD, "answers": {"text": ["dume"], "answer_start": ["9"]}}], "must be a character offset (an integer >= 0), not '9'"),
        ([{**GOOD, "answers": {"text": [" "], "answer_start": [4]}}], "answer 'text' must be non-empty text, not ' '"),
        ([{**GOOD, "question": ""}], ":1: column 'question' is empty"),
        ([{**GOOD, "context": ["kabo"]}], ":1: column 'context' must hold text, not list"),
    ],
)
def test_bad_data_fails_before_training(compile_config, project: Path, run_inprocess, rows, message: str) -> None:
    path = write_jsonl(project / "bad.jsonl", rows)
    code, _, err = run_inprocess(compile_config(QA_SPEC), "--validation_file_path", str(path))
    assert code == 1
    assert f"validation data file {path}" in err and message in err
    assert "Traceback" not in err
    assert not (project / "out" / "pytorch_model_folder").exists()
    assert message in (project / "out" / "ftc_runtime.log").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "train data file {path} is empty"),
        (json.dumps({**GOOD, "answers": {"text": [], "answer_start": []}}) + "\n",
         "train data file {path}: no row has an answer"),
    ],
)
def test_empty_or_unanswerable_training_data(compile_config, project: Path, run_inprocess, content: str, message: str) -> None:
    path = project / "data" / "train.jsonl"
    path.write_text(content)
    code, _, err = run_inprocess(compile_config(QA_SPEC))
    assert code == 1
    assert message.format(path=path) in err and "Traceback" not in err


def test_a_question_that_leaves_no_room_for_the_stride(compile_config, project: Path, run_inprocess) -> None:
    """The tokenizer would panic; the runtime names the row and the settings instead."""
    long_question = {**GOOD, "question": "what comes after " + " ".join(FILLER[:18]) + " ?"}
    path = write_jsonl(project / "data" / "long.jsonl", [GOOD, long_question])
    code, _, err = run_inprocess(compile_config(QA_SPEC), "--validation_file_path", str(path))
    assert code == 1
    assert (
        f"validation data file {path}:2: the question is 22 tokens, which leaves 7 of data.max_seq_length 32 "
        "(3 special tokens) to the context, and a chunk must hold more than data.doc_stride 8"
    ) in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- learning for real


@pytest.mark.slow
def test_learns_to_answer_with_a_test_file(compile_config, project: Path, run_inprocess) -> None:
    """Exact and f1 from near 0 to well above on validation and test data (each with its own chunks);
    the MLflow model answers the test questions as the trained model does."""
    test_file = project / "data" / "test.jsonl"
    code, out, err = run_inprocess(compile_config(QA_SPEC), "--test_file_path", str(test_file), "--save_as_mlflow_model", "true")
    assert code == 0, err
    metrics = _metrics(project / "out")
    assert metrics["initial_eval_exact"] < 20 and metrics["initial_eval_f1"] < 20, metrics
    assert metrics["eval_exact"] >= 90 and metrics["test_exact"] >= 90, metrics
    assert metrics["eval_f1"] >= metrics["eval_exact"] and metrics["test_f1"] >= metrics["test_exact"]
    assert metrics["eval_loss"] < metrics["initial_eval_loss"] / 3
    line = next(x for x in out.splitlines() if x.startswith("validation f1 before:"))
    assert f"after: {metrics['eval_f1']:.4f}" in line
    assert "unanswerable training questions: an empty answer is predicted when it scores best" in err
    info = json.loads((project / "out" / "pytorch_model_folder" / "ftc_model_info.json").read_text())
    expected = {"task": "question_answering", "max_seq_length": 32, "doc_stride": 8, "max_answer_length": 4, "null_answers": True}
    assert {k: info[k] for k in expected} == expected

    import mlflow.pyfunc
    import pandas as pd

    # Served: answers, and empty answers to the unanswerable questions, also where a context takes several chunks.
    rows = [json.loads(line) for line in test_file.read_text().splitlines()]
    frame = pd.DataFrame({"question": [r["question"] for r in rows], "context": [r["context"] for r in rows]})
    predicted = mlflow.pyfunc.load_model(str(project / "out" / "mlflow_model_folder")).predict(frame)["answer"]
    gold = [(r["answers"]["text"] or [""])[0] for r in rows]
    long = [i for i, r in enumerate(rows) if len(r["context"].split()) > 24]  # more than one chunk
    assert sum(predicted[i] == gold[i] for i in range(len(rows))) >= 0.9 * len(rows)
    assert sum(predicted[i] == gold[i] for i in long) >= 0.9 * len(long) and sum(gold[i] == "" for i in long) >= 10


@pytest.mark.slow
def test_lora_adapter_keeps_the_span_head(compile_config, project: Path, run_inprocess) -> None:
    """peft task type QUESTION_ANS: the new span head (qa_outputs) is trained in full and saved with the adapter."""
    from safetensors import safe_open

    args = ("--apply_lora", "true", "--merge_lora_weights", "false", "--max_steps", "3", "--max_eval_steps", "1")
    code, _, err = run_inprocess(compile_config(QA_SPEC), *args)
    assert code == 0, err
    folder = project / "out" / "pytorch_model_folder"
    assert json.loads((folder / "adapter_config.json").read_text())["task_type"] == "QUESTION_ANS"
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as weights:
        names = list(weights.keys())
    assert any("qa_outputs" in n for n in names) and any("lora_A" in n for n in names), names
    assert "eval_f1" in _metrics(project / "out")
