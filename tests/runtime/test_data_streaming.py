"""data.streaming: causal_lm training data as an IterableDataset; max_steps required (lint FTC170 and at run
time); other tasks refuse it (FTC171 and at run time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ftc.runtime.errors import RuntimeUserError
from tests.runtime.test_causal_lm import CHAT_SPEC, lm_data, lm_models, project  # noqa: F401
from tests.runtime.tiny import write_jsonl

STREAMING_SPEC = CHAT_SPEC.replace("  context_length: 128\n", "  context_length: 128\n  streaming: true\n")


def _cfg(compile_config: Any, spec: str, **overrides: str) -> Any:
    """The run config of `spec`, with command-line overrides applied after the compile (and its lint)."""
    from ftc.runtime.config import Override, load_config

    return load_config(compile_config(spec), [Override(k, v) for k, v in overrides.items()])


def test_a_stream_gives_packed_rows_of_the_file_as_it_is_read(compile_config: Any, lm_data: Path) -> None:  # noqa: F811
    import datasets

    from ftc.runtime.tasks.causal_lm import IGNORE, TASK

    cfg = _cfg(compile_config, STREAMING_SPEC)
    data = TASK.load_data(cfg)
    assert data.train.streamed and isinstance(data.train.table.dataset, datasets.IterableDataset)
    prepared = TASK.prepare(cfg, data)
    assert isinstance(prepared.train_dataset, datasets.IterableDataset)
    assert prepared.info["streaming"] is True and prepared.info["batching_strategy"] == "packing"
    rows = list(prepared.train_dataset.take(20))
    assert len(rows) == 20
    for row in rows:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) <= 128
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        assert starts[0] == 0 and all(row["labels"][i] == IGNORE for i in starts)  # no label across samples
    whole = TASK.prepare(_cfg(compile_config, CHAT_SPEC), TASK.load_data(_cfg(compile_config, CHAT_SPEC)))
    assert prepared.eval_dataset["input_ids"] == whole.eval_dataset["input_ids"]  # validation is prepared whole


def test_a_bad_row_of_a_stream_names_its_line(compile_config: Any, project: Path) -> None:  # noqa: F811
    from ftc.runtime.errors import DataError
    from ftc.runtime.tasks.causal_lm import TASK

    rows = [{"text": "one two three"}, {"text": "four five"}, {"text": 7}]
    write_jsonl(project / "stream.jsonl", rows)
    spec = STREAMING_SPEC.replace("data/chat/train.jsonl", "stream.jsonl")
    cfg = _cfg(compile_config, spec)
    prepared = TASK.prepare(cfg, TASK.load_data(cfg))
    with pytest.raises(DataError, match=r"train data file .*stream.jsonl:3: text column 'text' must hold text"):
        list(prepared.train_dataset)


def test_streaming_needs_max_steps_and_a_validation_file_at_run_time(compile_config: Any) -> None:
    from ftc.runtime.tasks.causal_lm import TASK

    with pytest.raises(RuntimeUserError, match="set training.max_steps"):
        TASK.load_data(_cfg(compile_config, STREAMING_SPEC, max_steps="-1"))
    no_validation = STREAMING_SPEC.replace("  validation_file_path: data/chat/validation.jsonl\n", "")
    with pytest.raises(RuntimeUserError, match="give data.validation_file_path"):
        TASK.load_data(_cfg(compile_config, no_validation))


def test_other_tasks_refuse_streaming_at_run_time(compile_config: Any, project: Path) -> None:  # noqa: F811
    from ftc.runtime.tasks.text_classification import TASK

    write_jsonl(project / "tc.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    spec = CHAT_SPEC.replace("task: causal_lm", "task: text_classification").replace("data/chat/train.jsonl", "tc.jsonl")
    spec = spec.replace("data/chat/validation.jsonl", "tc.jsonl").replace("perplexity", "accuracy")
    with pytest.raises(RuntimeUserError, match="task text_classification does not stream"):
        TASK.load_data(_cfg(compile_config, spec, streaming="true"))


@pytest.mark.parametrize(
    ("spec", "rule", "found"),
    [
        (STREAMING_SPEC, "FTC170", False),
        (STREAMING_SPEC.replace("  max_steps: 150\n", "  num_train_epochs: 1\n"), "FTC170", True),
        (CHAT_SPEC.replace("  max_steps: 150\n", "  num_train_epochs: 1\n"), "FTC170", False),
        (STREAMING_SPEC, "FTC171", False),
        (STREAMING_SPEC.replace("task: causal_lm", "task: text_classification").replace("perplexity", "accuracy"), "FTC171", True),
    ],
)
def test_lint_rules(project: Path, spec: str, rule: str, found: bool) -> None:  # noqa: F811
    from ftc.compiler.build import load_resolved
    from ftc.spec.rules import run_rules

    path = project / "spec.yaml"
    path.write_text(spec)
    findings = [f for f in run_rules(load_resolved(path)) if f.rule == rule]
    assert bool(findings) == found, findings
    if found:
        assert findings[0].severity == "error" and "streaming" in ".".join(map(str, findings[0].key)) + findings[0].message


def test_a_streamed_run_trains_max_steps(compile_config: Any, run_inprocess: Any, project: Path) -> None:  # noqa: F811
    import json

    code, _, err = run_inprocess(compile_config(STREAMING_SPEC.replace("  max_steps: 150\n", "  max_steps: 5\n")))
    assert code == 0, err[-3000:]
    metrics = json.loads((project / "out" / "metrics.json").read_text())
    assert metrics["eval_perplexity"] < metrics["initial_eval_perplexity"]
