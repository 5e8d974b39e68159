"""Rules on the data: columns, labels, rows and context length (checked when the files or the model are local)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ftc.spec.peek import count_lines, model_config, peek_data
from ftc.spec.rules.facts import data_files, given
from ftc.spec.rules.registry import KeyPath, rule
from ftc.spec.sections import LLM_MAX_SEQ_LENGTH, LLM_TASKS

if TYPE_CHECKING:
    from ftc.spec.resolved import Resolved


HUGE_CONTEXT = 32768  # FTC135: causal_lm max_seq_length above this is warned about


@rule("FTC130", "error", "column missing from the data")
def _columns_exist(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The columns the spec names exist in the data files (checked when the files are reachable)."""
    needed = _task_columns(r)
    for file_key, path in data_files(r):
        peek = peek_data(path)
        if peek is None or not peek.rows:
            continue
        for key, column in needed:
            if column not in peek.columns and not (key == "text_key" and "messages_key" in dict(needed)):
                yield (
                    ("data", key),
                    f"column {column!r} is not in {path.name} (columns: {', '.join(sorted(peek.columns))})",
                )
        if r.spec.task == "causal_lm" and not {r.spec.data.text_key, r.spec.data.messages_key} & peek.columns:
            yield ("data", "text_key"), f"{path.name} has neither {r.spec.data.text_key!r} nor {r.spec.data.messages_key!r}"


@rule("FTC131", "error", "validation label unseen in training")
def _labels_seen(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Every label in the validation data appears in the training data (text classification)."""
    if r.spec.task != "text_classification":
        return
    files = dict(data_files(r))
    train, val = files.get("train"), files.get("validation")
    if not (train and val):
        return
    tpeek, vpeek = peek_data(train), peek_data(val)
    label = r.spec.data.label_key
    if tpeek and vpeek and tpeek.complete:
        unseen = vpeek.values(label) - tpeek.values(label)
        if unseen:
            shown = ", ".join(sorted(unseen)[:5])
            yield ("data", "label_key"), f"labels in {val.name} but not in {train.name}: {shown}"


@rule("FTC132", "error", "context longer than the model's positions")
def _context_fits(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """max_seq_length must not exceed the model's max_position_embeddings (checked when the model is local;
    causal_lm's default yields to a smaller maximum)."""
    if not given(r, "data.max_seq_length"):
        return
    length = r.spec.data.max_seq_length
    config = model_config(r.doc.base_dir, r.spec.model.model_selector_output) or {}
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    if length > 0 and type(limit) is int and length > limit:
        yield ("data", "max_seq_length"), f"is {length} but the model has {limit} positions; use at most {limit}"


@rule("FTC133", "warning", "evaluating a large validation set very often")
def _eval_too_often(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Evaluating 10,000+ validation rows every few steps makes evaluation dominate training time."""
    ev = r.spec.evaluation
    if ev.evaluation_strategy != "steps" or ev.evaluation_steps_interval or ev.eval_steps > 5:
        return
    val = dict(data_files(r)).get("validation")
    if val and (count_lines(val, 10_000) or 0) >= 10_000:
        yield ("evaluation", "eval_steps"), f"evaluates {val.name} (10,000+ rows) every {ev.eval_steps} steps; raise eval_steps"


@rule("FTC134", "error", "validation data with no rows")
def _eval_has_rows(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Evaluation needs at least one batch: the validation file has rows, or the training data has at least two
    to hold one out (checked when the files are reachable)."""
    files = dict(data_files(r))
    val, train = files.get("validation"), files.get("train")
    if val is not None:
        peek = peek_data(val)
        if peek is not None and not peek.rows:
            yield _data_key(r, "validation"), f"{val.name} has no rows, so evaluation gets no batch; add rows or remove it"
    elif train is not None:
        peek = peek_data(train)
        if peek is not None and len(peek.rows) < 2:
            yield (
                _data_key(r, "train"),
                f"{train.name} has {len(peek.rows)} row(s): too few to hold out validation data; "
                "give data.validation_file_path",
            )


@rule("FTC135", "warning", "causal_lm context of more than 32768 tokens")
def _huge_context(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """A causal_lm max_seq_length over 32768 tokens (given, or -1 with a local model whose maximum is that large)
    makes every packed row that long: attention memory grows with it, and one row rarely fits a GPU. ftc's
    default is 4096 (or the model's maximum when smaller)."""
    if r.spec.task not in LLM_TASKS:
        return
    length = r.spec.data.max_seq_length
    if length == -1:
        config = model_config(r.doc.base_dir, r.spec.model.model_selector_output) or {}
        limit = config.get("max_position_embeddings") or config.get("n_positions")
        length = limit if type(limit) is int else 0
    if length > HUGE_CONTEXT:
        yield ("data", "max_seq_length"), (
            f"makes packed rows of {length} tokens; that rarely fits a GPU: set it to the longest sample you need "
            f"(ftc's default is {LLM_MAX_SEQ_LENGTH})"
        )


def _data_key(r: Resolved, role: str) -> KeyPath:
    """The key that named the data file of `role`: its *_file_path, or preprocess_output."""
    name = f"{role}_file_path"
    return ("data", name) if getattr(r.spec.data, name) else ("data", "preprocess_output")


def _task_columns(r: Resolved) -> list[tuple[str, str]]:
    d = r.spec.data
    keys = {
        "text_classification": ["sentence1_key", "sentence2_key", "label_key"],
        "question_answering": ["question_key", "context_key", "answers_key"],
        "translation": ["source_key", "target_key"],
        "summarization": ["source_key", "target_key"],
        "causal_lm": [],
    }[r.spec.task]
    return [(k, getattr(d, k)) for k in keys if getattr(d, k)]


@rule("FTC170", "error", "streaming data without training.max_steps")
def _streaming_needs_max_steps(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """data.streaming reads the training data as a stream, which has no length: the Trainer cannot count the
    steps of an epoch, so the run must say how many steps to train (training.max_steps > 0)."""
    if r.spec.data.streaming and r.spec.training.max_steps <= 0:
        yield ("data", "streaming"), (
            "a stream has no length, so epochs cannot be counted: set training.max_steps (e.g. 1000) "
            "or turn streaming off"
        )


@rule("FTC171", "error", "streaming data for a task that cannot stream")
def _streaming_task(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Only causal_lm streams its training data: the other tasks need the whole training file first (label
    sets, held-out validation rows, answer spans)."""
    if r.spec.data.streaming and r.spec.task not in LLM_TASKS:
        yield ("data", "streaming"), f"task {r.spec.task} does not stream its data; only causal_lm does: turn streaming off"
