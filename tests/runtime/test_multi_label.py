"""Multi-label text classification: detection, multi-hot labels, metrics, bad data, and a tiny model trained end to end."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ftc.runtime.data import Table, read_table
from ftc.runtime.errors import DataError
from ftc.runtime.metrics import multi_label_metrics
from ftc.runtime.tasks.text_classification import (
    MULTI_LABEL,
    TASK,
    compute_multi_label_metrics,
    multi_hot,
    row_labels,
)
from tests.runtime.conftest import TINY_SPEC
from tests.runtime.tiny import FILLER, KEYWORDS, write_jsonl

GROUPS = ("animal", "food")  # the labels of the generated multi-label data


def multi_label_rows(n: int, seed: int) -> list[dict]:
    """`n` rows {text, label}: "animal" / "food" when the text has keywords of that group; the 4 label sets cycled."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        chosen = [g for bit, g in enumerate(GROUPS) if i >> bit & 1]
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 5))]
        words += [rng.choice(KEYWORDS[g]) for g in chosen for _ in range(rng.randint(2, 3))]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": chosen})
    rng.shuffle(rows)
    return rows


def _table(name: str, labels: list, role: str = "train") -> Table:
    rows = [{"text": "x", "label": v} for v in labels]
    return Table(Path(name), rows, role, "json", None, list(range(1, len(rows) + 1)))  # rows Arrow could not hold


def _cfg(compile_config, project: Path, train: list[dict], validation: list[dict] | None = None):
    from ftc.runtime.config import Override, load_config

    overrides = [Override("train_file_path", str(write_jsonl(project / "data" / "ml_train.jsonl", train)))]
    if validation is not None:
        path = write_jsonl(project / "data" / "ml_val.jsonl", validation)
        overrides.append(Override("validation_file_path", str(path)))
    return load_config(compile_config(), overrides, cwd=project)


# --------------------------------------------------------------------------- detection


def test_lists_are_multi_label_sets_and_scalars_single_labels() -> None:
    multi, labels = row_labels(_table("t.jsonl", [["b", "a"], [], ["a", "a"], [1, "1"]]), "label")
    assert multi is True
    assert labels == [frozenset({"a", "b"}), frozenset(), frozenset({"a"}), frozenset({1})]  # repeats count once
    assert row_labels(_table("t.jsonl", ["a", "b", 2]), "label") == (False, ["a", "b", 2])
    # JSON list text is a list in CSV / TSV only: in JSON Lines it is a label like any other.
    assert row_labels(_table("t.jsonl", ['["a"]', "b"]), "label") == (False, ['["a"]', "b"])


def test_csv_label_lists_are_json_list_text(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text('text,label\ncat,"[""animal""]"\ncat bread,"[""animal"", ""food""]"\nnothing,[]\n')
    assert row_labels(read_table(path), "label") == (True, [frozenset({"animal"}), frozenset({"animal", "food"}), frozenset()])
    path.write_text("text,label\ncat,animal\nbread,food\n")
    assert row_labels(read_table(path), "label") == (False, ["animal", "food"])
    path.write_text('text,label\ncat,"[""animal""]"\nbread,"[food]"\n')
    with pytest.raises(DataError, match=rf"train data file {path}:3: label 'label' '\[food\]' is not a JSON list"):
        row_labels(read_table(path), "label")


def test_parquet_list_columns_are_multi_label(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "train.parquet"
    pd.DataFrame({"text": ["cat", "cat bread"], "label": [["animal"], ["food", "animal"]]}).to_parquet(path)
    assert row_labels(read_table(path), "label") == (True, [frozenset({"animal"}), frozenset({"animal", "food"})])


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([["a"], "b"], "t.jsonl:2: label 'label' must be a list of labels, like the label in t.jsonl:1"),
        (["a", ["b"]], "t.jsonl:2: label 'label' must be a single label, not a list, like the label in t.jsonl:1"),
        ([["a", None]], "t.jsonl:1: label 'label' must be a string or an integer, not NoneType"),
        ([["a", ["b"]]], "t.jsonl:1: label 'label' must be a string or an integer, not list"),
        ([["a", " "]], "t.jsonl:1: label 'label' is empty"),
    ],
)
def test_mixed_or_bad_label_lists_name_file_and_line(labels: list, message: str) -> None:
    with pytest.raises(DataError, match=message):
        row_labels(_table("t.jsonl", labels), "label")


def test_multi_hot_encoding() -> None:
    label2id = {"animal": 0, "food": 1, "tool": 2}
    assert multi_hot(frozenset({"tool", "animal"}), label2id) == [1.0, 0.0, 1.0]
    assert multi_hot(frozenset(), label2id) == [0.0, 0.0, 0.0]  # an empty list: no label


# --------------------------------------------------------------------------- load_data and prepare


def test_load_data_unions_the_training_labels(compile_config, project: Path) -> None:
    train = [{"text": "x", "label": v} for v in (["tool"], ["food", "animal"], [], ["food"])]
    data = TASK.load_data(_cfg(compile_config, project, train, validation=[{"text": "y", "label": ["tool"]}]))
    assert data.multi_label is True
    assert data.labels == ["animal", "food", "tool"]  # sorted, as single-label labels are
    rows = [{"text": "x", "label": v} for v in ("b", "a")]
    single = TASK.load_data(_cfg(compile_config, project, rows, validation=[{"text": "y", "label": "a"}]))
    assert single.multi_label is False and single.labels == ["a", "b"]


@pytest.mark.parametrize(
    ("train", "validation", "message"),
    [
        ([["a"], ["b"]], [["a"], ["c", "b"]], "ml_val.jsonl:2: label 'c' is not in the training labels ('a', 'b'); "
                                              "unseen validation labels: 'c'"),
        ([["a"], ["b"]], [["a"], "b"], "ml_val.jsonl:2: label 'label' must be a list of labels, like the training labels"),
        (["a", "b"], [["a"]], "ml_val.jsonl:1: label 'label' must be a single label, not a list, like the training labels"),
        ([[], []], None, "ml_train.jsonl: every label list in column 'label' is empty"),
    ],
)
def test_bad_multi_label_data_is_a_data_error(compile_config, project: Path, train, validation, message: str) -> None:
    rows = [{"text": "x", "label": v} for v in train]
    val = [{"text": "y", "label": v} for v in validation] if validation is not None else None
    with pytest.raises(DataError, match=re.escape(message)):
        TASK.load_data(_cfg(compile_config, project, rows, val))


def test_prepare_builds_a_multi_label_model_with_multi_hot_labels(compile_config, project: Path) -> None:
    import torch

    cfg = _cfg(compile_config, project, multi_label_rows(16, seed=1), multi_label_rows(8, seed=2))
    prepared = TASK.prepare(cfg, TASK.load_data(cfg))
    assert prepared.model.config.problem_type == MULTI_LABEL
    assert prepared.info["problem_type"] == MULTI_LABEL and prepared.info["num_labels"] == len(GROUPS)
    assert prepared.loss_uses_num_items is False  # a batch-mean loss (see Prepared)
    assert prepared.compute_metrics is compute_multi_label_metrics
    rows = multi_label_rows(16, seed=1)
    expected = [[float(g in r["label"]) for g in GROUPS] for r in rows]
    assert prepared.train_dataset["labels"] == expected
    batch = prepared.data_collator([prepared.train_dataset[i] for i in range(4)])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (4, len(GROUPS))
    out = prepared.model(**batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch["labels"])
    assert out.loss.item() == pytest.approx(bce.item())


# --------------------------------------------------------------------------- metrics


REFS = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 1]])
PREDS = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0]])


def test_multi_label_metrics_hand_computed() -> None:
    m = multi_label_metrics(REFS, PREDS)
    assert list(m) == ["accuracy", "f1_macro", "mcc", "precision_macro", "recall_macro"]  # the single-label names
    assert m["accuracy"] == pytest.approx(2 / 4)  # rows 0 and 2 match exactly (2: two empty sets)
    # Per label (precision, recall, f1): (1, 1, 1), (1, 1/2, 2/3), (0, 0, 0).
    assert m["precision_macro"] == pytest.approx(2 / 3)
    assert m["recall_macro"] == pytest.approx(1 / 2)
    assert m["f1_macro"] == pytest.approx(5 / 9)
    tp, tn, fp, fn = 3, 7, 0, 2  # the 12 (example, label) decisions
    assert m["mcc"] == pytest.approx((tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))


def test_macro_averages_skip_labels_never_present_or_predicted() -> None:
    pad = np.zeros((4, 1), dtype=int)
    wider = multi_label_metrics(np.hstack([REFS, pad]), np.hstack([PREDS, pad]))
    m = multi_label_metrics(REFS, PREDS)
    for name in ("accuracy", "f1_macro", "precision_macro", "recall_macro"):
        assert wider[name] == pytest.approx(m[name]), name
    assert multi_label_metrics(REFS, REFS) == pytest.approx(dict.fromkeys(m, 1.0))


def test_compute_metrics_predicts_labels_with_sigmoid_above_one_half() -> None:
    logits = np.array([[2.0, -1.0, -0.01], [0.3, 0.01, -3.0], [-1.0, -2.0, -0.5], [-1.0, 4.0, -0.2]])
    m = compute_multi_label_metrics(SimpleNamespace(predictions=(logits,), label_ids=REFS.astype(np.float32)))
    assert m == pytest.approx(multi_label_metrics(REFS, np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]])))
    assert m["accuracy"] == pytest.approx(3 / 4)


# --------------------------------------------------------------------------- end to end


MULTI_LABEL_SPEC = (
    TINY_SPEC.replace("data/train.jsonl", "data/ml_train.jsonl")
    .replace("data/validation.jsonl", "data/ml_val.jsonl")
    .replace("metric_for_best_model: accuracy", "metric_for_best_model: f1_macro")
    .replace("num_train_epochs: 8", "num_train_epochs: 16")  # 240 steps
)


def _label_sets(predictions) -> list[set[str]]:
    return [set(labels) for labels in predictions["labels"]]


@pytest.mark.slow
def test_trains_a_multi_label_model_and_its_mlflow_model_predicts_label_sets(
    compile_config, project: Path, run_inprocess
) -> None:
    import mlflow.pyfunc
    import yaml

    write_jsonl(project / "data" / "ml_train.jsonl", multi_label_rows(240, seed=0))
    val = multi_label_rows(64, seed=1)
    write_jsonl(project / "data" / "ml_val.jsonl", val)
    code, _, err = run_inprocess(compile_config(MULTI_LABEL_SPEC))
    assert code == 0, err
    assert "labels (2, multi-label): animal=120, food=120;" in err
    out = project / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_accuracy"] >= 0.9  # exact match
    assert metrics["initial_eval_accuracy"] <= 0.5  # the untrained model
    assert metrics["eval_f1_macro"] > metrics["initial_eval_f1_macro"]
    for key in ("eval_mcc", "eval_precision_macro", "eval_recall_macro"):
        assert key in metrics, key
    folder = out / "pytorch_model_folder"
    assert json.loads((folder / "ftc_model_info.json").read_text())["problem_type"] == MULTI_LABEL
    assert json.loads((folder / "config.json").read_text())["problem_type"] == MULTI_LABEL

    mlflow_folder = out / "mlflow_model_folder"
    flavors = yaml.safe_load((mlflow_folder / "MLmodel").read_text())["flavors"]
    assert "python_function" in flavors and "transformers" not in flavors
    model = mlflow.pyfunc.load_model(str(mlflow_folder))
    predicted = _label_sets(model.predict([r["text"] for r in val]))
    exact = sum(p == set(r["label"]) for p, r in zip(predicted, val)) / len(val)
    assert exact == pytest.approx(metrics["eval_accuracy"])  # the same threshold as the evaluation
    new = multi_label_rows(40, seed=7)
    predicted = _label_sets(model.predict([r["text"] for r in new]))
    assert sum(p == set(r["label"]) for p, r in zip(predicted, new)) / len(new) >= 0.8
    scores = model.predict(["cat bread"], params={"threshold": 0.0})["scores"][0]
    assert len(scores) == len(GROUPS) and list(scores) == sorted(scores, reverse=True)  # every label, best first
