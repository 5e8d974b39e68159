"""Text classification: single sentences or sentence pairs, string or integer labels; single- or multi-label.

Columns come from data.sentence1_key, data.sentence2_key (optional) and data.label_key. The label
set is that of the training file, sorted; validation and test labels must belong to it. Without
a validation file, a seeded data.validation_split_ratio of the training rows is held out.

Multi-label: when the training file's labels are lists (JSON lists in JSON Lines / JSON, list
columns in Parquet, and in CSV / TSV a cell of JSON list text such as `["a", "b"]`; elsewhere
such text is a plain label), each example has a set of labels. The label set is the union of all
lists (at least one label: a single one is a yes/no classifier); an empty list means no label
(every output "no"), and a label repeated in one list counts once. Every row of every file must
then hold a list, and a single label where lists are expected (or a list in a single-label data
set) is a DataError naming file:line. The model gets problem_type multi_label_classification
(a sigmoid per label, BCE-with-logits loss on multi-hot float labels), a label is predicted when
its sigmoid is above 0.5, and the metrics are those of `ftc.runtime.metrics.multi_label_metrics`
(accuracy is exact-match accuracy). ftc_model_info.json records problem_type, and the MLflow
model returns each text's set of labels (see ftc/runtime/outputs.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ftc.runtime.config import RunConfig
from ftc.runtime.data import (
    Table,
    char_bound,
    map_rows,
    read_table,
    refuse_streaming,
    require_columns,
    seeded_split,
    spec_data_paths,
    warn_cut,
)
from ftc.runtime.errors import DataError
from ftc.runtime.tasks import Prepared

log = logging.getLogger("ftc.runtime")

_INT = re.compile(r"^[+-]?\d+$")
MULTI_LABEL = "multi_label_classification"  # transformers' problem_type of a multi-label model
SINGLE_LABEL = "single_label_classification"
_LIST_TEXT_FORMATS = (".csv", ".tsv")  # formats whose label lists are written as JSON list text


@dataclass
class ClassificationData:
    train: Table
    validation: Table
    test: Table | None
    labels: list[Any]  # sorted; the index of a label is its class id
    split_from_train: bool = False
    multi_label: bool = False

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


def label_list(value: Any, table: Table, row: int, key: str) -> list[Any] | None:
    """The labels of a multi-label cell (a list, a Parquet array, JSON list text in CSV / TSV); None otherwise."""
    if isinstance(value, list):
        return value
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1:
        return list(value.tolist())
    if isinstance(value, str) and table.suffix in _LIST_TEXT_FORMATS:
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                return list(json.loads(text))
            except json.JSONDecodeError:
                raise DataError(
                    f"{table.role} data file {table.where(row)}: label {key!r} {text!r} is not a JSON list; "
                    'write a list of labels as ["a", "b"]'
                ) from None
    return None


def row_labels(table: Table, key: str, multi: bool | None = None) -> tuple[bool, list[Any]]:
    """Whether the labels are multi-label, and each row's label (single-label) or frozenset of labels.

    `multi` None: the first row decides (the training file); else every row must be of that kind.
    """
    like = "the training labels" if multi is not None else f"the label in {table.where(0)}"
    out: list[Any] = []
    for i, value in enumerate(table.column(key)):
        items = label_list(value, table, i, key)
        if multi is None:
            multi = items is not None
        if (items is not None) != multi:
            raise DataError(
                f"{table.role} data file {table.where(i)}: label {key!r} must be "
                f"{'a list of labels' if multi else 'a single label, not a list'}, like {like}; "
                "a data set's labels are all lists (multi-label) or all single labels"
            )
        if items is None:
            out.append(canonical_label(value, table, i, key))
        else:
            out.append(frozenset(canonical_label(v, table, i, key) for v in items))
    return bool(multi), out


def multi_hot(labels: frozenset[Any], label2id: dict[str, int]) -> list[float]:
    """The float multi-hot vector of a set of labels (BCE-with-logits targets)."""
    hot = [0.0] * len(label2id)
    for label in labels:
        hot[label2id[str(label)]] = 1.0
    return hot


def _sorted_labels(values: set[int | str]) -> list[int | str]:
    if all(isinstance(v, int) for v in values):
        return sorted(values)  # type: ignore[type-var]
    return sorted(values, key=str)


def _texts(table: Table, key: str) -> list[str]:
    out = []
    for i, value in enumerate(table.column(key)):
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
        refuse_streaming(cfg, "text_classification")
        d = cfg.spec.data
        paths = spec_data_paths(cfg)
        columns = self.columns(cfg)
        train = read_table(paths["train"], "train")
        require_columns(train, columns)
        for col in columns[:-1]:
            _texts(train, col)
        multi, train_labels = row_labels(train, d.label_key)
        labels = _sorted_labels(set().union(*train_labels) if multi else set(train_labels))
        if multi and not labels:
            raise DataError(f"train data file {train.path}: every label list in column {d.label_key!r} is empty")
        if not multi and len(labels) < 2:
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
            validation = self._labelled(paths["validation"], "validation", columns, labels, d.label_key, multi)
        test = self._labelled(paths["test"], "test", columns, labels, d.label_key, multi) if "test" in paths else None
        return ClassificationData(train, validation, test, labels, split, multi)

    def _labelled(self, path: Any, role: str, columns: list[str], labels: list[Any], key: str, multi: bool) -> Table:
        table = read_table(path, role)
        require_columns(table, columns)
        for col in columns[:-1]:
            _texts(table, col)
        known = set(labels)
        unseen: dict[Any, int] = {}
        for i, row_label in enumerate(row_labels(table, key, multi)[1]):
            for label in sorted(row_label, key=str) if multi else [row_label]:
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
            **({"problem_type": MULTI_LABEL} if data.multi_label else {}),
        )
        ensure_pad_token(tokenizer, model)
        length = max_length(cfg, tokenizer, model.config)
        train_labels = row_labels(data.train, cfg.spec.data.label_key, data.multi_label)[1]
        counts = Counter(str(v) for labels in train_labels for v in (labels if data.multi_label else [labels]))
        log.info(
            "labels (%d%s): %s; train %d rows, validation %d rows%s; max_seq_length %d",
            len(data.labels), ", multi-label" if data.multi_label else "",
            ", ".join(f"{k}={counts.get(k, 0)}" for k in data.label2id),
            len(data.train), len(data.validation), f", test {len(data.test)} rows" if data.test else "", length,
        )
        encode = _Encoder(cfg, tokenizer, data.label2id, length, data.multi_label)
        return Prepared(
            model=model,
            tokenizer=tokenizer,
            train_dataset=encode(data.train),
            eval_dataset=encode(data.validation),
            test_dataset=encode(data.test) if data.test is not None else None,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=compute_multi_label_metrics if data.multi_label else compute_metrics,
            peft_task_type="SEQ_CLS",
            headline_metric="accuracy",
            loss_uses_num_items=False,  # cross-entropy (multi-label: BCE-with-logits) mean over the batch
            info={
                "num_labels": len(data.labels), "id2label": data.id2label, "label2id": data.label2id,
                "problem_type": MULTI_LABEL if data.multi_label else SINGLE_LABEL, "max_seq_length": length,
            },
        )


class _Encoder:
    """Tokenizes a table into a datasets.Dataset of input_ids, attention_mask (...) and labels, through a
    cached `Dataset.map` (see ftc.runtime.data.map_rows).

    labels: class ids (single-label) or float multi-hot vectors (multi-label).
    """

    def __init__(self, cfg: RunConfig, tokenizer: Any, label2id: dict[str, int], length: int, multi: bool = False) -> None:
        d = cfg.spec.data
        self.cfg, self.label_key, self.label2id, self.multi = cfg, d.label_key, label2id, multi
        self.keys = [d.sentence1_key, *([d.sentence2_key] if d.sentence2_key else [])]
        self.tokenize = _Tokenize(tokenizer, self.keys, length, "max_length" if d.pad_to_max_length else False)

    def __call__(self, table: Table) -> Any:
        warn_cut(table, self.keys, self.tokenize.bound, self.tokenize.length)
        dataset = map_rows(table, self.tokenize, self.cfg, "tokenizing")
        labels = row_labels(table, self.label_key, self.multi)[1]
        if self.multi:
            return dataset.add_column("labels", [multi_hot(v, self.label2id) for v in labels])
        return dataset.add_column("labels", [self.label2id[str(v)] for v in labels])


class _Tokenize:
    """The map function: texts cut to `bound` characters (data.char_bound), tokenized with truncation."""

    def __init__(self, tokenizer: Any, keys: list[str], length: int, padding: Any) -> None:
        self.tokenizer, self.keys, self.length, self.padding = tokenizer, keys, length, padding
        self.bound = char_bound(tokenizer, length)

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        args = [[str(v)[: self.bound] for v in batch[key]] for key in self.keys]
        return dict(self.tokenizer(*args, truncation=True, max_length=self.length, padding=self.padding))


def _logits(eval_pred: Any) -> Any:
    """The Trainer's logits as an array (the first output where the model returns several)."""
    import numpy as np

    logits = eval_pred.predictions
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    return np.asarray(logits)


def compute_metrics(eval_pred: Any) -> dict[str, float]:
    """accuracy, f1_macro, mcc, precision_macro, recall_macro from the Trainer's logits and labels."""
    import numpy as np

    from ftc.runtime.metrics import classification_metrics

    return classification_metrics(np.asarray(eval_pred.label_ids), _logits(eval_pred).argmax(axis=-1))


def compute_multi_label_metrics(eval_pred: Any) -> dict[str, float]:
    """The multi-label metrics; a label is predicted where its sigmoid is above 0.5 (its logit above 0)."""
    import numpy as np

    from ftc.runtime.metrics import multi_label_metrics

    return multi_label_metrics(np.asarray(eval_pred.label_ids) > 0.5, _logits(eval_pred) > 0)


TASK = TextClassification()
