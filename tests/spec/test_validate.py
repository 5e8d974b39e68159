"""Schema validation: every error names file:line:col, the key, what was expected, and a fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ftc.compiler.build import load_resolved
from ftc.errors import SpecError
from ftc.spec.keys import leaf_index
from ftc.spec.model import section_models, spec_model

HEAD = "task: text_classification\nmodel: ./m\ndata:\n  train_file_path: t.jsonl\n"


def errors_of(write_spec: Callable[..., Path], text: str, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_resolved(write_spec(text), overrides)
    return [str(p) for p in info.value.problems]


def test_unknown_key_suggests_the_close_name(write_spec: Callable[..., Path]) -> None:
    (msg,) = errors_of(write_spec, HEAD + "optimizer:\n  learnig_rate: 0.1\n")
    assert msg.endswith("spec.yaml:6:3: optimizer.learnig_rate: unknown key; did you mean learning_rate?")


def test_unknown_key_in_the_wrong_section_names_its_home(write_spec: Callable[..., Path]) -> None:
    (msg,) = errors_of(write_spec, HEAD + "training:\n  lora_r: 4\n")
    assert "training.lora_r: unknown key; did you mean lora.lora_r?" in msg
    (msg,) = errors_of(write_spec, HEAD + "learning_rate: 0.1\n")
    assert ":5:1: learning_rate: unknown key; did you mean optimizer.learning_rate?" in msg


@pytest.mark.parametrize(
    ("extra", "where", "words"),
    [
        ("lora:\n  lora_r: abc\n", ":6:3: lora.lora_r:", "valid integer"),
        ("lora:\n  lora_r: 0\n", ":6:3: lora.lora_r:", "greater than or equal to 1"),
        ("lora:\n  apply_lora: maybe\n", ":6:3: lora.apply_lora:", "expected true or false"),
        ("optimizer:\n  lr_scheduler_type: cosin\n", ":6:3: optimizer.lr_scheduler_type:", "'linear'"),
        ("evaluation:\n  evaluation_steps_interval: 1.5\n", ":6:3:", "less than or equal to 1"),
        ("precision: 8\n", ":5:1: precision.precision:", "'32'"),
        ("evaluation:\n  metric_for_best_model: bleu\n", ":6:3: evaluation.metric_for_best_model:", "not a metric of task"),
        ("optimizer:\n  lr: 0.1\n  learning_rate: 0.2\n", ":5:1: optimizer:", "name the same parameter"),
        ("env:\n  secrets: [not-a-name]\n", ":6:3: env.secrets.0:", "pattern"),
        ("resources:\n  num_devices: 3\n  processes_per_node: 2\n", ":6:3: resources.num_devices:", "nodes x processes_per_node"),
    ],
)
def test_bad_values(write_spec: Callable[..., Path], extra: str, where: str, words: str) -> None:
    (msg,) = errors_of(write_spec, HEAD + extra)
    assert where in msg and words in msg, msg


def test_missing_model_and_data(write_spec: Callable[..., Path]) -> None:
    msgs = errors_of(write_spec, "task: text_classification\n")
    assert any("model: is required" in m for m in msgs)
    assert any("data: is required" in m for m in msgs)


def test_all_problems_reported_at_once(write_spec: Callable[..., Path]) -> None:
    msgs = errors_of(write_spec, HEAD + "lora:\n  lora_r: x\n  lora_alpha: y\nbogus: 1\n")
    assert len(msgs) == 3


def test_azure_ml_string_booleans_and_numbers(write_spec: Callable[..., Path]) -> None:
    r = load_resolved(write_spec(HEAD + "lora:\n  apply_lora: 'true'\noptimizer:\n  learning_rate: 1e-4\nprecision: 16\n"))
    assert r.spec.lora.apply_lora is True
    assert r.spec.optimizer.learning_rate == 1e-4
    assert r.spec.precision.precision == "16"


def test_aliases_of_other_systems(write_spec: Callable[..., Path]) -> None:
    text = HEAD + (
        "training:\n  num_epochs: 3\n  batch_size_training: 8\n"
        "optimizer:\n  lr: 0.001\n  num_warmup_steps: 10\n"
        "lora_config:\n  r: 16\n  lora_alpha: 16\n"
    )
    r = load_resolved(write_spec(text))
    assert r.spec.training.num_train_epochs == 3
    assert r.spec.training.per_device_train_batch_size == 8
    assert r.spec.optimizer.learning_rate == 0.001
    assert r.spec.optimizer.warmup_steps == 10
    assert r.spec.lora.apply_lora is True  # an Anyscale lora_config block turns LoRA on
    assert r.spec.lora.lora_r == 16


def test_task_defaults(write_spec: Callable[..., Path]) -> None:
    tc = load_resolved(write_spec(HEAD))
    lm = load_resolved(write_spec(HEAD.replace("text_classification", "causal_lm"), name="lm.yaml"))
    qa = load_resolved(write_spec(HEAD.replace("text_classification", "question_answering"), name="qa.yaml"))
    assert (tc.spec.optimizer.learning_rate, tc.spec.lora.lora_alpha) == (2e-05, 128)
    assert (lm.spec.optimizer.learning_rate, lm.spec.lora.lora_alpha) == (1e-4, 32)
    assert lm.sources["optimizer.learning_rate"] == "default for task causal_lm"
    assert (tc.spec.evaluation.eval_accumulation_steps, qa.spec.evaluation.eval_accumulation_steps) == (None, 1)
    given = load_resolved(write_spec(HEAD.replace("text_classification", "causal_lm") + "optimizer:\n  lr: 0.5\n", name="g.yaml"))
    assert given.spec.optimizer.learning_rate == 0.5


def test_derived_values(write_spec: Callable[..., Path]) -> None:
    text = HEAD + "training:\n  per_device_train_batch_size: 4\n  gradient_accumulation_steps: 2\nresources:\n  num_devices: 4\n  nodes: 2\n"
    r = load_resolved(write_spec(text))
    assert r.spec.resources.processes_per_node == 2
    assert r.derived["world_size"] == 4
    assert r.derived["effective_train_batch_size"] == 32


def test_leaf_names_are_unique_across_sections() -> None:
    seen: dict[str, str] = {}
    for section, model in section_models().items():
        if section == "targets":
            continue
        for name, field in model.model_fields.items():
            from ftc.spec.fields import names_of

            for n in names_of(name, field):
                assert n not in seen, f"{n} is in both {seen[n]} and {section}"
                seen[n] = section
    assert leaf_index()["lr"] == ("optimizer", "learning_rate")


def test_every_parameter_is_described() -> None:
    for section, model in section_models().items():
        for name, field in model.model_fields.items():
            assert field.description, f"{section}.{name} has no description"
    assert spec_model().model_fields["task"].description
