"""Other tools' names behave as an import would read them (issue 16): LoRA and DeepSpeed switches implied by
their settings, task and key suggestions, credentials reported as leaked secrets, and raw Axolotl and
LLMForge files (tests/spec/fixtures/foreign, see SOURCES.md there) giving a few errors that say where each
key belongs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ftc.cli.lint_report import lint_file
from ftc.compiler.build import load_resolved
from ftc.errors import SpecError
from ftc.spec.foreign import FOREIGN_NAMES, FOREIGN_TASKS
from ftc.spec.keys import leaf_index, suggest

FOREIGN = Path(__file__).parent / "fixtures" / "foreign"
HEAD = "task: causal_lm\nmodel: ./m\ndata:\n  train_file_path: t.jsonl\n"
WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"  # shaped like a W&B key (40 hex)


def problems_of(write_spec: Callable[..., Path], text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_resolved(write_spec(text))
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("lora:\n  lora_r: 4\n", True),
        ("lora_config:\n  r: 4\n", True),
        ("lora:\n  r: 4\n  lora_alpha: 8\n", True),
        ("lora:\n  apply_lora: false\n  lora_r: 4\n", False),
        ("lora_config:\n  use_peft: false\n  r: 4\n", False),
        ("lora: {}\n", False),
        ("", False),
    ],
)
def test_a_lora_section_with_settings_turns_lora_on_under_either_name(
    write_spec: Callable[..., Path], section: str, expected: bool
) -> None:
    assert load_resolved(write_spec(HEAD + section)).spec.lora.apply_lora is expected


def test_lora_config_with_use_peft_is_not_a_duplicate(write_spec: Callable[..., Path]) -> None:
    lora = load_resolved(write_spec(HEAD + "lora_config:\n  use_peft: true\n  r: 16\n")).spec.lora
    assert (lora.apply_lora, lora.lora_r) == (True, 16)
    (msg,) = problems_of(write_spec, HEAD + "lora_config:\n  use_peft: true\n  apply_lora: true\n")
    assert "apply_lora and use_peft name the same parameter" in msg  # both written: still one name too many


def test_llmforge_deepspeed_config_path_turns_deepspeed_on(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2}}')
    r = load_resolved(write_spec(HEAD + "deepspeed:\n  config_path: ds.json\n"))
    assert (r.spec.deepspeed.apply_deepspeed, r.spec.deepspeed.deepspeed) == (True, "ds.json")
    # The Azure ML name keeps Azure ML's meaning: the file is ignored without apply_deepspeed (FTC103).
    r = load_resolved(write_spec(HEAD + "deepspeed:\n  deepspeed: ds.json\n"))
    assert r.spec.deepspeed.apply_deepspeed is False
    r = load_resolved(write_spec(HEAD + "deepspeed:\n  config_path: ds.json\n  apply_deepspeed: false\n"))
    assert r.spec.deepspeed.apply_deepspeed is False


@pytest.mark.parametrize(
    ("name", "task"),
    [("text_generation", "causal_lm"), ("chat_completion", "causal_lm"), ("text-classification", "text_classification")],
)
def test_another_tools_task_name_gets_did_you_mean(write_spec: Callable[..., Path], name: str, task: str) -> None:
    (msg,) = problems_of(write_spec, HEAD.replace("causal_lm", name))
    assert ":1:1: task:" in msg and f"did you mean {task}?" in msg, msg


def test_task_table_names_only_real_tasks() -> None:
    from ftc.spec.fields import TASKS

    assert set(FOREIGN_TASKS.values()) <= set(TASKS)
    assert not set(FOREIGN_TASKS) & set(TASKS)  # an accepted name needs no hint


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (f"tracking:\n  wandb_config:\n    api_key: {WANDB_KEY}\n", "tracking.wandb_config.api_key"),
        ("tracking:\n  wandb_config:\n    api_key: not-token-shaped\n", "tracking.wandb_config.api_key"),
        ("model:\n  model_selector_output: ./m\n  hf_token: hf_abc\n", "model.hf_token"),
        ("tracking:\n  mlflow_tracking_token: abc\n", "tracking.mlflow_tracking_token"),
        (f"wandb_config:\n  api_key: {WANDB_KEY}\n", "wandb_config.api_key"),
    ],
)
def test_a_foreign_credential_key_is_a_leaked_secret(write_spec: Callable[..., Path], extra: str, key: str) -> None:
    text = HEAD.replace("model: ./m\n", "") + extra if extra.startswith("model:") else HEAD + extra
    findings = lint_file(write_spec(text), []).findings
    secret = [f for f in findings if f.rule == "FTC106"]
    assert [f.key for f in secret] == [key], findings
    assert "env.secrets" in secret[0].message and WANDB_KEY not in str(findings)
    assert not any(f.key == key and "unknown key" in f.message for f in findings)


@pytest.mark.parametrize(
    ("key", "target"),
    [
        ("base_model", "model.model_selector_output"),
        ("micro_batch_size", "training.per_device_train_batch_size"),
        ("sequence_len", "data.max_seq_length"),
        ("lora_target_modules", "lora.target_modules"),
        ("num_epochs", "training.num_train_epochs"),
        ("model_id", "model.model_selector_output"),
        ("learning_rate", "optimizer.learning_rate"),
        ("lora_r", "lora.lora_r"),
    ],
)
def test_foreign_names_suggest_their_home(key: str, target: str) -> None:
    assert suggest((key,)).startswith(f"did you mean {target}?")


def test_a_foreign_name_inside_its_section_suggests_the_local_name() -> None:
    assert suggest(("lora", "lora_target_modules")).startswith("did you mean target_modules?")


def test_foreign_names_point_at_real_keys() -> None:
    """Every FOREIGN_NAMES destination is a parameter (or a ray target setting) and no name is ftc's own."""
    parameters = {f"{section}.{name}" for section, name in leaf_index().values()}
    extra = {"task", "tracking.wandb_config.project", "tracking.wandb_config.entity",
             "targets.ray.trainer_resources", "targets.ray.worker_resources"}
    assert {dest for dest, _ in FOREIGN_NAMES.values()} <= parameters | extra
    # `optimizer` is ftc's section (and fsdp's alias): the hint is for Axolotl's `optimizer: adamw_8bit`.
    assert set(FOREIGN_NAMES) & set(leaf_index()) == {"optimizer"}


def _schema_errors(path: Path) -> list[str]:
    findings = lint_file(path, []).findings
    assert {f.rule for f in findings} == {"FTC001"}
    return [f"{f.location}: {f.key}: {f.message}" for f in findings]


def test_a_raw_axolotl_file_gives_few_errors_each_naming_where_keys_belong() -> None:
    errors = _schema_errors(FOREIGN / "axolotl_lora-1b.yml")
    assert len(errors) == 13  # 43 before issue 16: one per key
    text = "\n".join(errors)
    first = "axolotl_lora-1b.yml:1:1: base_model: unknown key at the top level that belongs in the model section: "
    assert first + "base_model (line 1) -> model.model_selector_output" in text
    assert "micro_batch_size (line 40) -> training.per_device_train_batch_size" in text
    assert "sequence_len (line 16) -> data.max_seq_length" in text
    assert "`ftc import`" in text
    assert "strict: unknown keys, no ftc parameter: strict (line 4), dataset_prepared_path (line 9)," in text
    assert "checkpointing.save_model" not in text


def test_a_raw_llmforge_file_gives_few_errors() -> None:
    errors = _schema_errors(FOREIGN / "llmforge_mistral-7b.yaml")
    assert len(errors) == 12  # 19 before issue 16
    text = "\n".join(errors)
    assert "model_id (line 1) -> model.model_selector_output" in text
    assert "padding (line 10) -> data.pad_to_max_length (longest is false, max_length true)" in text
    assert "worker_resources (line 18) -> targets.ray.worker_resources" in text
    assert "lora_config.task_type: unknown key; did you mean task?" in text


def test_one_unknown_top_level_key_keeps_its_own_message(write_spec: Callable[..., Path]) -> None:
    (msg,) = problems_of(write_spec, HEAD + "micro_batch_size: 2\n")
    assert msg.endswith(":5:1: micro_batch_size: unknown key; did you mean training.per_device_train_batch_size? "
                        "(micro_batch_size is another tool's name)")


def test_axolotl_optimizer_name_where_ftc_has_a_section(write_spec: Callable[..., Path]) -> None:
    (msg,) = problems_of(write_spec, HEAD + "optimizer: adamw_8bit\n")
    assert ":5:1: optimizer:" in msg and "did you mean optimizer.optim?" in msg, msg
