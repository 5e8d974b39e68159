"""Text classification: single sentences or sentence pairs, string or integer labels.

Columns come from data.sentence1_key, data.sentence2_key (optional) and data.label_key. The label
set is that of the training file, sorted; validation and test labels must belong to it. Without
a validation file, a seeded data.validation_split_ratio of the training rows is held out.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ftc.runtime.config import RunConfig
from ftc.runtime.data import Table, data_paths, read_table, require_columns, seeded_split
from ftc.runtime.errors import DataError
from ftc.runtime.tasks import Prepared

log = logging.getLogger("ftc.runtime")

_INT = re.compile(r"^[+-]?\d+$")


@dataclass
class ClassificationData:
    train: Table
    validation: Table
    test: Table | None
    labels: list[Any]  # sorted; the index of a label is its class id
    split_from_train: bool = False

    @property
    def id2label(self) -> dict[int, str]:
        return {i: str(label) for i, label in enumerate(self.labels)}

    @property
    def label2id(self) -> dict[str, int]:
        return {str(label): i for i, label in enumerate(self.labels)}


def canonical_label(value: Any, table: Table, row: int, key: str) -> int | str:
    """Labels compare as integers where they are integers (1, 1.0, "1"), else as text."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise DataError(f"{table.role} data file {table.where(row)}: label {key!r} is empty")
        return int(text) if _INT.match(text) else text
    raise DataError(
        f"{table.role} data file {table.where(row)}: label {key!r} must be a string or an integer, "
        f"not {type(value).__name__} ({value!r})"
    )


def _sorted_labels(values: set[int | str]) -> list[int | str]:
    if all(isinstance(v, int) for v in values):
        return sorted(values)  # type: ignore[type-var]
    return sorted(values, key=str)


def _texts(table: Table, key: str) -> list[str]:
    out = []
    for i, row in enumerate(table.rows):
        value = row[key]
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(str(value))
        else:
            raise DataError(
                f"{table.role} data file {table.where(i)}: column {key!r} must hold text, not {type(value).__name__}"
            )
    return out


class TextClassification:
    name = "text_classification"

    def columns(self, cfg: RunConfig) -> list[str]:
        d = cfg.spec.data
        return [d.sentence1_key, *([d.sentence2_key] if d.sentence2_key else []), d.label_key]

    def load_data(self, cfg: RunConfig) -> ClassificationData:
        d = cfg.spec.data
        paths = data_paths(
            cfg.path("data", "train_file_path"),
            cfg.path("data", "validation_file_path"),
            cfg.path("data", "test_file_path"),
            cfg.path("data", "preprocess_output"),
        )
        columns = self.columns(cfg)
        train = read_table(paths["train"], "train")
        require_columns(train, columns)
        for col in columns[:-1]:
            _texts(train, col)
        train_labels = [canonical_label(r[d.label_key], train, i, d.label_key) for i, r in enumerate(train.rows)]
        labels = _sorted_labels(set(train_labels))
        if len(labels) < 2:
            raise DataError(
                f"train data file {train.path}: column {d.label_key!r} has a single label ({labels[0]!r}); "
                "classification needs at least two"
            )
        split = "validation" not in paths
        if split:
            train, validation = seeded_split(train, d.validation_split_ratio, cfg.spec.training.seed)
            log.info(
                "no validation file: holding out %d of %d training rows (validation_split_ratio %s, seed %d)",
                len(validation), len(train) + len(validation), d.validation_split_ratio, cfg.spec.training.seed,
            )
        else:
            validation = self._labelled(paths["validation"], "validation", columns, labels, d.label_key)
        test = self._labelled(paths["test"], "test", columns, labels, d.label_key) if "test" in paths else None
        return ClassificationData(train, validation, test, labels, split)

    def _labelled(self, path: Any, role: str, columns: list[str], labels: list[Any], key: str) -> Table:
        table = read_table(path, role)
        require_columns(table, columns)
        for col in columns[:-1]:
            _texts(table, col)
        known = set(labels)
        unseen: dict[Any, int] = {}
        for i, row in enumerate(table.rows):
            label = canonical_label(row[key], table, i, key)
            if label not in known:
                unseen.setdefault(label, i)
        if unseen:
            first_label, first_row = next(iter(unseen.items()))
            names = ", ".join(repr(str(v)) for v in list(unseen)[:5]) + (" ..." if len(unseen) > 5 else "")
            raise DataError(
                f"{role} data file {table.where(first_row)}: label {first_label!r} is not in the training labels "
                f"({', '.join(repr(str(v)) for v in labels[:10])}{' ...' if len(labels) > 10 else ''}); "
                f"unseen {role} labels: {names}"
            )
        return table

    def prepare(self, cfg: RunConfig, data: ClassificationData) -> Prepared:
        from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

        from ftc.runtime.models import ensure_pad_token, load_model, load_tokenizer, max_length

        tokenizer = load_tokenizer(cfg)
        model = load_model(
            AutoModelForSequenceClassification,
            cfg,
            num_labels=len(data.labels),
            id2label=data.id2label,
            label2id=data.label2id,
            ignore_mismatched_sizes=cfg.spec.model.ignore_mismatched_sizes,
        )
        ensure_pad_token(tokenizer, model)
        length = max_length(cfg, tokenizer, model.config)
        counts = Counter(
            str(canonical_label(r[cfg.spec.data.label_key], data.train, i, "")) for i, r in enumerate(data.train.rows)
        )
        log.info(
            "labels (%d): %s; train %d rows, validation %d rows%s; max_seq_length %d",
            len(data.labels), ", ".join(f"{k}={counts.get(k, 0)}" for k in data.label2id),
            len(data.train), len(data.validation), f", test {len(data.test)} rows" if data.test else "", length,
        )
        encode = _Encoder(cfg, tokenizer, data.label2id, length)
        return Prepared(
            model=model,
            tokenizer=tokenizer,
            train_dataset=encode(data.train),
            eval_dataset=encode(data.validation),
            test_dataset=encode(data.test) if data.test is not None else None,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=compute_metrics,
            peft_task_type="SEQ_CLS",
            headline_metric="accuracy",
            loss_uses_num_items=False,  # cross-entropy mean over the batch
            info={"num_labels": len(data.labels), "id2label": data.id2label, "label2id": data.label2id, "max_seq_length": length},
        )


class _Encoder:
    """Tokenizes a table into a datasets.Dataset of input_ids, attention_mask (...) and labels."""

    def __init__(self, cfg: RunConfig, tokenizer: Any, label2id: dict[str, int], length: int) -> None:
        d = cfg.spec.data
        self.key1, self.key2, self.label_key = d.sentence1_key, d.sentence2_key, d.label_key
        self.tokenizer, self.label2id, self.length = tokenizer, label2id, length
        self.padding = "max_length" if d.pad_to_max_length else False
        self.batch = d.preprocess_batch_size

    def __call__(self, table: Table) -> Any:
        from datasets import Dataset

        first = _texts(table, self.key1)
        second = _texts(table, self.key2) if self.key2 else None
        columns: dict[str, list[Any]] = {}
        for start in range(0, len(first), self.batch):
            args = [first[start : start + self.batch]]
            if second is not None:
                args.append(second[start : start + self.batch])
            enc = self.tokenizer(*args, truncation=True, max_length=self.length, padding=self.padding)
            for k, v in enc.items():
                columns.setdefault(k, []).extend(v)
        columns["labels"] = [
            self.label2id[str(canonical_label(r[self.label_key], table, i, self.label_key))]
            for i, r in enumerate(table.rows)
        ]
        return Dataset.from_dict(columns)


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """accuracy, f1_macro, mcc, precision_macro, recall_macro from the Trainer's logits and labels."""
    import numpy as np

    from ftc.runtime.metrics import classification_metrics

    logits = eval_pred.predictions
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    predictions = np.asarray(logits).argmax(axis=-1)
    return classification_metrics(np.asarray(eval_pred.label_ids), predictions)


TASK = TextClassification()
