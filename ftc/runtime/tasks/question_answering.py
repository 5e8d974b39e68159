"""Extractive question answering (SQuAD style): the answer is a span of the context.

Data: one example per row, with the question in data.question_key, the context passage in
data.context_key and the answers in data.answers_key, an object with the answer texts under
data.answer_text_key and their character offsets in the context under data.answer_start_key:
{"text": ["Denver Broncos"], "answer_start": [177]} (SQuAD's form). A single answer may also be
given without the lists ({"text": "Denver Broncos", "answer_start": 177}), and in a CSV file the
object is written as JSON text. Empty lists mark a question the context does not answer (SQuAD
v2). Every answer must be found at its offset (context[start:start + len(text)] == text); a
DataError names the file and line otherwise, and for missing columns, non-text questions or
contexts, and malformed answers. Without a validation file, a seeded
data.validation_split_ratio of the training rows is held out.

Chunks. The question and the context are tokenized as a pair (a fast tokenizer is needed for the
character offsets of the tokens); a context that does not fit in data.max_seq_length tokens is
split into overlapping chunks ("features") that share data.doc_stride tokens with the previous
chunk, each with the whole question. Chunking is a `Dataset.map` of the data file cached by
fingerprint (ftc.runtime.data.map_rows, in data.preprocessing_num_workers processes): a rerun on
the same files, and the other processes of a node, read the chunks from datasets' cache. A chunk is
labelled with the token span of the example's first answer when that answer lies whole inside its
context tokens, else with the position of the [CLS] token (the no-answer position: unanswerable
examples, and chunks that do not hold the answer). The model is any `AutoModelForQuestionAnswering`
(a new span head is created for an encoder checkpoint); its loss, the mean of the start and end
cross-entropies over the batch, ignores num_items_in_batch, so `loss_uses_num_items` is False.

Post-processing (evaluation). For every chunk of an example, the positions of its
data.n_best_size highest start logits and of its n_best_size highest end logits are paired (as
run_qa.py does); a pair is a candidate when both are context tokens, the end does not come before
the start and the span is at most data.max_answer_length_in_tokens tokens. The
candidate with the highest start + end logit over all chunks of the example is the prediction,
mapped back to the context's characters through the offsets. When the training data holds
unanswerable examples (`null_answers`), the no-answer score of the example is the lowest
[CLS] start + end logit over its chunks (as transformers' run_qa.py), and the empty answer is
predicted when it beats the best span. compute_metrics receives the logits of the chunks, in
order, so each split has its own (`SquadMetrics`, with the split's examples and the chunks'
offsets; the test split's is Prepared.test_compute_metrics); when evaluation.max_eval_steps
scores the first chunks only, the examples they belong to are scored.

Metrics: `exact` and `f1` as the official SQuAD v1.1 evaluation script computes them, x 100:
answers are normalized (lower case, punctuation and the articles a / an / the removed,
whitespace collapsed); exact is 1 when the normalized texts are equal, f1 the F1 of their shared
tokens; each is the best over the example's gold answers, then averaged. An unanswerable example
scores 1 on both when the prediction is empty and 0 otherwise (the v2 script's rule).
"""

from __future__ import annotations

import json
import logging
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ftc.runtime.config import RunConfig
from ftc.runtime.data import (
    RowError,
    Table,
    map_rows,
    read_table,
    refuse_streaming,
    require_columns,
    seeded_split,
    spec_data_paths,
)
from ftc.runtime.errors import DataError, RuntimeUserError
from ftc.runtime.tasks import Prepared

log = logging.getLogger("ftc.runtime")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
Span = tuple[int, int]


# --------------------------------------------------------------------------- metrics (official SQuAD)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD script's normalize_answer)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def f1_score(prediction: str, truth: str) -> float:
    """F1 of the normalized tokens the prediction shares with one gold answer."""
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def squad_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """{"exact", "f1"} x 100, each the best over an example's gold answers ([]: unanswerable)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    exact = f1 = 0.0
    for prediction, golds in zip(predictions, references):
        if not golds:  # SQuAD v2: right only when nothing is predicted
            hit = float(not normalize_answer(prediction))
            exact, f1 = exact + hit, f1 + hit
            continue
        exact += max(exact_match_score(prediction, g) for g in golds)
        f1 += max(f1_score(prediction, g) for g in golds)
    n = max(len(predictions), 1)
    return {"exact": 100 * exact / n, "f1": 100 * f1 / n}


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    question: str
    context: str
    answers: tuple[str, ...]  # gold answer texts; empty: unanswerable
    starts: tuple[int, ...]  # their character offsets in the context
    where: str = field(default="", compare=False)  # "train data file PATH:LINE", for messages


@dataclass
class QAData:
    train: list[Example]
    validation: list[Example]
    test: list[Example] | None
    split_from_train: bool = False
    tables: dict[str, Table] = field(default_factory=dict)  # the rows of each split, chunked by `Dataset.map`


@dataclass(frozen=True)
class AnswerKeys:
    """Where a row keeps its answers: the column (data.answers_key) and the keys of the texts and offsets in it."""

    column: str
    text: str
    start: str

    @classmethod
    def of(cls, cfg: RunConfig) -> AnswerKeys:
        d = cfg.spec.data
        return cls(d.answers_key, d.answer_text_key, d.answer_start_key)


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: column {key!r} must hold text, not {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: column {key!r} is empty")
    return value


def _as_list(value: Any) -> list[Any]:
    """A list, tuple or array (Parquet) as a list; a single value as a list of one."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _answers(value: Any, where: str, keys: AnswerKeys) -> tuple[list[str], list[int]]:
    """The answer texts and start offsets of one row's answers column."""
    form = f"{{{keys.text!r}: [...], {keys.start!r}: [...]}}"
    if isinstance(value, str):  # CSV: the object as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{where}: column {keys.column!r} must be an object {form}, not text") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: column {keys.column!r} must be an object {form}, not {type(value).__name__}")
    for key in (keys.text, keys.start):
        if key not in value:
            raise DataError(f"{where}: the answers ({keys.column!r}) have no {key!r} (keys: {', '.join(map(repr, value))})")
    texts, starts = _as_list(value[keys.text]), _as_list(value[keys.start])
    if len(texts) != len(starts):
        raise DataError(f"{where}: the answers have {len(texts)} {keys.text!r} but {len(starts)} {keys.start!r}")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: answer {keys.text!r} must be non-empty text, not {text!r}")
    for start in starts:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise DataError(f"{where}: answer {keys.start!r} must be a character offset (an integer >= 0), not {start!r}")
    return texts, starts


def _example(table: Table, i: int, cfg: RunConfig) -> Example:
    d = cfg.spec.data
    row, where = table.rows[i], f"{table.role} data file {table.where(i)}"
    question = _text(row[d.question_key], where, d.question_key)
    context = _text(row[d.context_key], where, d.context_key)
    texts, starts = _answers(row[d.answers_key], where, AnswerKeys.of(cfg))
    for text, start in zip(texts, starts):
        found = context[start : start + len(text)]
        if found != text:
            elsewhere = context.find(text)
            hint = f"; the text occurs at offset {elsewhere}" if elsewhere >= 0 else "; the text is not in the context"
            raise DataError(
                f"{where}: answer {text!r} is not at {d.answer_start_key} {start} of the context "
                f"(the context has {found!r} there){hint}"
            )
    return Example(question, context, tuple(texts), tuple(starts), where)


def read_examples(table: Table, cfg: RunConfig) -> list[Example]:
    """The examples of a table, every row checked (DataError naming the file and line)."""
    d = cfg.spec.data
    require_columns(table, [d.question_key, d.context_key, d.answers_key])
    return [_example(table, i, cfg) for i in range(len(table))]


# --------------------------------------------------------------------------- chunks


def token_span(offsets: list[Span | None], start_char: int, end_char: int) -> Span | None:
    """The tokens holding characters [start_char, end_char) when the chunk's context holds them whole."""
    context = [(i, span) for i, span in enumerate(offsets) if span is not None]
    if not context or context[0][1][0] > start_char or context[-1][1][1] < end_char:
        return None
    start = max(i for i, span in context if span[0] <= start_char)
    end = min(i for i, span in context if span[1] >= end_char)
    return start, max(start, end)


@dataclass
class Features:
    """The chunks of one split: model inputs and labels (`dataset`), and what maps logits back to answers."""

    examples: list[Example]
    dataset: Any  # datasets.Dataset: input_ids, attention_mask (token_type_ids), start_positions, end_positions
    example_index: list[int]  # the example of each chunk
    offsets: list[list[Span | None]]  # characters of each context token of a chunk; None for the others
    cls_index: list[int]  # the no-answer position of each chunk


# Columns of `Chunker.encode` beside the model's: the example of each chunk, its context tokens' characters, its
# no-answer position, and `lost` (on the first chunk of an answered example none of whose chunks holds the answer).
CHUNK_COLUMNS = ("example", "offsets", "cls", "lost")


class Chunker:
    """Tokenizes examples into overlapping chunks of at most `length` tokens sharing `stride` tokens."""

    def __init__(self, tokenizer: Any, length: int, stride: int, pad: bool, batch: int) -> None:
        self.tokenizer, self.length, self.stride = tokenizer, length, stride
        self.padding = "max_length" if pad else False
        self.batch = batch

    def room_problem(self, questions: list[str]) -> tuple[int, str] | None:
        """(position, message) of the longest question when it leaves no more than doc_stride tokens to the
        context (the tokenizer panics then); None when every question leaves room."""
        special = self.tokenizer.num_special_tokens_to_add(pair=True)
        lengths = [len(ids) for ids in self.tokenizer(questions, add_special_tokens=False)["input_ids"]]
        longest = max(range(len(questions)), key=lengths.__getitem__)
        room = self.length - special - lengths[longest]
        if room > self.stride:
            return None
        return longest, (
            f"the question is {lengths[longest]} tokens, which leaves {max(room, 0)} of "
            f"data.max_seq_length {self.length} ({special} special tokens) to the context, and a chunk must hold "
            f"more than data.doc_stride {self.stride}: raise max_seq_length, lower doc_stride or shorten the question"
        )

    def encode(self, questions: list[str], contexts: list[str], answers: list[Span | None]) -> dict[str, list[Any]]:
        """The chunks of a batch: the model's columns, the labels (the span of the answer, characters
        [start, end), where a chunk holds it whole, else the no-answer position) and CHUNK_COLUMNS (`example`:
        the position in the batch)."""
        enc = self.tokenizer(
            questions, contexts, truncation="only_second", max_length=self.length, stride=self.stride,
            return_overflowing_tokens=True, return_offsets_mapping=True, padding=self.padding,
        )
        example = list(enc["overflow_to_sample_mapping"])
        offsets = [
            [tuple(span) if k == 1 else None for span, k in zip(enc["offset_mapping"][f], enc.sequence_ids(f))]
            for f in range(len(example))
        ]
        cls_id = self.tokenizer.cls_token_id
        cls = [ids.index(cls_id) if cls_id in ids else 0 for ids in enc["input_ids"]]
        spans = [token_span(offsets[f], *answers[e]) if answers[e] else None for f, e in enumerate(example)]
        columns = {k: v for k, v in enc.items() if k not in ("offset_mapping", "overflow_to_sample_mapping")}
        columns["start_positions"] = [span[0] if span else c for span, c in zip(spans, cls)]
        columns["end_positions"] = [span[1] if span else c for span, c in zip(spans, cls)]
        held = {e for e, span in zip(example, spans) if span is not None}
        opens = [f == 0 or example[f - 1] != e for f, e in enumerate(example)]  # an example's chunks are adjacent
        lost = [answers[e] is not None and e not in held and first for e, first in zip(example, opens)]
        return {**columns, "example": example, "offsets": offsets, "cls": cls, "lost": lost}

    def __call__(self, examples: list[Example]) -> Features:
        """The chunks of examples in memory, `batch` examples per tokenizer call."""
        from datasets import Dataset

        if problem := self.room_problem([e.question for e in examples]):
            raise DataError(f"{examples[problem[0]].where}: {problem[1]}")
        columns: dict[str, list[Any]] = {}
        for first in range(0, len(examples), self.batch):
            part = examples[first : first + self.batch]
            spans = [answer_span(e.answers, e.starts) for e in part]
            encoded = self.encode([e.question for e in part], [e.context for e in part], spans)
            encoded["example"] = [first + e for e in encoded["example"]]
            for key, values in encoded.items():
                columns.setdefault(key, []).extend(values)
        example, offsets, cls, lost = (columns.pop(key) for key in CHUNK_COLUMNS)
        lost_at = [e for e, flag in zip(example, lost) if flag]
        if lost_at:
            warn_lost(len(lost_at), len(examples), self.stride, examples[lost_at[0]].where)
        return Features(examples, Dataset.from_dict(columns), example, offsets, cls)


def answer_span(texts: Sequence[str], starts: Sequence[int]) -> Span | None:
    """Characters [start, end) of the first answer, which the chunks are labelled with; None: unanswerable."""
    return (starts[0], starts[0] + len(texts[0])) if texts else None


def warn_lost(count: int, total: int, stride: int, where: str) -> None:
    log.warning(
        "%d of %d examples have no chunk that holds their whole answer (an answer longer than data.doc_stride "
        "%d tokens can cross every chunk boundary): they train as unanswerable; the first: %s",
        count, total, stride, where,
    )


class ChunkRows:
    """The `Dataset.map` function of a table (ftc.runtime.data.map_rows): a batch of rows chunked by
    `Chunker.encode`, `example` the row of each chunk in the table. The rows were checked by `read_examples`."""

    def __init__(self, chunker: Chunker, question_key: str, context_key: str, answers: AnswerKeys) -> None:
        self.chunker, self.question_key, self.context_key, self.answers = chunker, question_key, context_key, answers

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        questions, contexts = batch[self.question_key], batch[self.context_key]
        if problem := self.chunker.room_problem(questions):
            raise RowError(indices[problem[0]], problem[1])
        answers = [answer_span(*_answers(value, "", self.answers)) for value in batch[self.answers.column]]
        columns = self.chunker.encode(questions, contexts, answers)
        columns["example"] = [indices[e] for e in columns["example"]]
        return columns


def chunk_table(table: Table, rows: ChunkRows, cfg: RunConfig) -> Any:
    """The chunks of a table, with CHUNK_COLUMNS, through a `Dataset.map` cached by fingerprint (`map_rows`);
    a warning for the answers no chunk holds whole."""
    import pyarrow.compute as pc

    mapped = map_rows(table, rows, cfg, "chunking")
    lost = mapped.with_format("arrow")["lost"]
    if count := int(pc.sum(lost).as_py() or 0):
        first = int(pc.index(lost, True).as_py())
        warn_lost(count, len(table), rows.chunker.stride, f"{table.role} data file {table.where(mapped[first]['example'])}")
    return mapped


def model_inputs(chunks: Any) -> Any:
    """The chunks' model inputs and labels (CHUNK_COLUMNS dropped)."""
    return chunks.remove_columns(list(CHUNK_COLUMNS))


def features_of(examples: list[Example], chunks: Any) -> Features:
    """The Features of a split's examples and their chunks (`chunk_table`), the offsets read from Arrow."""
    offsets = [[tuple(span) if span is not None else None for span in chunk] for chunk in chunks["offsets"]]
    return Features(examples, model_inputs(chunks), chunks["example"], offsets, chunks["cls"])


# --------------------------------------------------------------------------- post-processing


def best_span(start: Any, end: Any, offsets: list[Span | None], n_best: int, max_tokens: int) -> tuple[float, int, int] | None:
    """(start + end logit, first character, end character) of a chunk's best answer span; None when it has none."""
    import numpy as np

    n = len(offsets)
    starts = np.argsort(start[:n])[::-1][:n_best]
    ends = np.argsort(end[:n])[::-1][:n_best]
    best = None
    for s in starts:
        first = offsets[s]
        if first is None:
            continue
        for e in ends:
            last = offsets[e]
            if last is None or e < s or e - s + 1 > max_tokens:
                continue
            score = float(start[s] + end[e])
            if best is None or score > best[0]:
                best = (score, first[0], last[1])
    return best


def predict_answers(
    features: Features, start_logits: Any, end_logits: Any, n_best: int, max_tokens: int, null_answers: bool
) -> dict[int, str]:
    """The answer of each example with scored chunks (the first len(start_logits) chunks); "" for no answer."""
    best: dict[int, tuple[float, str]] = {}
    null: dict[int, float] = {}
    for f in range(len(start_logits)):
        e, c = features.example_index[f], features.cls_index[f]
        null[e] = min(null.get(e, float("inf")), float(start_logits[f][c] + end_logits[f][c]))
        span = best_span(start_logits[f], end_logits[f], features.offsets[f], n_best, max_tokens)
        if span is not None and span[0] > best.get(e, (float("-inf"), ""))[0]:
            best[e] = (span[0], features.examples[e].context[span[1] : span[2]])
    answers = {}
    for e in null:
        score, text = best.get(e, (float("-inf"), ""))
        answers[e] = "" if null_answers and null[e] > score else text
    return answers


class SquadMetrics:
    """compute_metrics of one split: the chunks' start and end logits -> answers -> exact and f1."""

    def __init__(self, features: Features, n_best: int, max_tokens: int, null_answers: bool) -> None:
        self.features, self.n_best, self.max_tokens, self.null_answers = features, n_best, max_tokens, null_answers

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        start_logits, end_logits = eval_pred.predictions[:2]
        answers = predict_answers(self.features, start_logits, end_logits, self.n_best, self.max_tokens, self.null_answers)
        references = [list(self.features.examples[e].answers) for e in answers]
        return squad_scores(list(answers.values()), references)


# --------------------------------------------------------------------------- the task


class QuestionAnswering:
    name = "question_answering"

    def load_data(self, cfg: RunConfig) -> QAData:
        refuse_streaming(cfg, "question_answering")
        d = cfg.spec.data
        paths = spec_data_paths(cfg)
        table = read_table(paths["train"], "train")
        train = read_examples(table, cfg)
        if not any(e.answers for e in train):
            raise DataError(f"train data file {table.path}: no row has an answer; extractive QA learns from answered questions")
        split = "validation" not in paths
        if split:
            train_part, validation_part = seeded_split(table, d.validation_split_ratio, cfg.spec.training.seed)
            train, validation = read_examples(train_part, cfg), read_examples(validation_part, cfg)
            log.info(
                "no validation file: holding out %d of %d training rows (validation_split_ratio %s, seed %d)",
                len(validation), len(table), d.validation_split_ratio, cfg.spec.training.seed,
            )
        else:
            train_part, validation_part = table, read_table(paths["validation"], "validation")
            validation = read_examples(validation_part, cfg)
        tables = {"train": train_part, "validation": validation_part}
        test = None
        if "test" in paths:
            tables["test"] = read_table(paths["test"], "test")
            test = read_examples(tables["test"], cfg)
        return QAData(train, validation, test, split, tables)

    def prepare(self, cfg: RunConfig, data: QAData) -> Prepared:
        from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding

        from ftc.runtime.models import ensure_pad_token, load_model, load_tokenizer, max_length

        d = cfg.spec.data
        tokenizer = load_tokenizer(cfg)
        if not tokenizer.is_fast:
            raise RuntimeUserError(
                f"question answering needs a fast tokenizer (for the character offsets of the tokens); "
                f"{type(tokenizer).__name__} is not one"
            )
        model = load_model(AutoModelForQuestionAnswering, cfg, ignore_mismatched_sizes=cfg.spec.model.ignore_mismatched_sizes)
        ensure_pad_token(tokenizer, model)
        length = max_length(cfg, tokenizer, model.config)
        chunker = Chunker(tokenizer, length, d.doc_stride, d.pad_to_max_length, d.preprocess_batch_size)
        rows = ChunkRows(chunker, d.question_key, d.context_key, AnswerKeys.of(cfg))
        train = model_inputs(chunk_table(data.tables["train"], rows, cfg))
        validation = features_of(data.validation, chunk_table(data.tables["validation"], rows, cfg))
        test = features_of(data.test, chunk_table(data.tables["test"], rows, cfg)) if data.test is not None else None
        null_answers = any(not e.answers for e in data.train)

        def metrics(features: Features) -> SquadMetrics:
            return SquadMetrics(features, d.n_best_size, d.max_answer_length_in_tokens, null_answers)

        log.info(
            "question answering: train %d examples in %d chunks, validation %d in %d%s; max_seq_length %d, "
            "doc_stride %d; %s",
            len(data.train), len(train), len(data.validation), len(validation.dataset),
            f", test {len(test.examples)} in {len(test.dataset)}" if test is not None else "",
            length, d.doc_stride,
            "unanswerable training questions: an empty answer is predicted when it scores best" if null_answers
            else "every training question has an answer: a span is always predicted",
        )
        return Prepared(
            model=model,
            tokenizer=tokenizer,
            train_dataset=train,
            eval_dataset=validation.dataset,
            test_dataset=test.dataset if test is not None else None,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=metrics(validation),
            test_compute_metrics=metrics(test) if test is not None else None,
            peft_task_type="QUESTION_ANS",
            headline_metric="f1",
            loss_uses_num_items=False,  # the mean of the start and end cross-entropies over the batch
            info={
                "max_seq_length": length,
                "doc_stride": d.doc_stride,
                "n_best_size": d.n_best_size,
                "max_answer_length": d.max_answer_length_in_tokens,
                "null_answers": null_answers,
            },
        )


TASK = QuestionAnswering()
