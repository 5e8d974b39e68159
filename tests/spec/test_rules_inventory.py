"""The cross-field rules of the parameter inventory beyond one trigger each, and what lint.ignore may name."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ftc.cli.lint_report import lint_file
from ftc.compiler.build import load_resolved
from ftc.errors import SpecError
from ftc.spec.rules import Finding, run_rules
from ftc.spec.validate import rule_ids

from tests.conftest import MINIMAL
from tests.spec.test_rules import workspace


def findings(write_spec: Callable[..., Path], text: str) -> dict[str, list[Finding]]:
    found: dict[str, list[Finding]] = {}
    for f in run_rules(load_resolved(write_spec(text))):
        found.setdefault(f.rule, []).append(f)
    return found


def schema_errors(write_spec: Callable[..., Path], text: str) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load_resolved(write_spec(text))
    return [str(p) for p in exc.value.problems]


# ---------------------------------------------------------------- FTC105 from the data


@pytest.mark.parametrize(
    "extra, steps",
    [
        ("", 20),  # 20 rows, batch 1, 1 process, 1 epoch
        ("resources:\n  processes_per_node: 2\n", 10),
        ("training:\n  num_train_epochs: 3\n  per_device_train_batch_size: 4\n", 15),
        ("training:\n  gradient_accumulation_steps: 3\n", 7),
    ],
)
def test_warmup_is_compared_with_the_steps_the_data_makes(
    extra: str, steps: int, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    workspace(tmp_path)
    (warmup,) = findings(write_spec, MINIMAL + extra + f"optimizer:\n  warmup_steps: {steps}\n")["FTC105"]
    assert warmup.path == ("optimizer", "warmup_steps") and f"at most {steps} training steps" in warmup.message
    assert "FTC105" not in findings(write_spec, MINIMAL + extra + f"optimizer:\n  warmup_steps: {steps - 1}\n")


def test_warmup_is_not_judged_without_the_whole_training_file(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path)
    text = MINIMAL.replace("data/train.jsonl", "data/many.jsonl") + "optimizer:\n  warmup_steps: 4000\n"
    (tmp_path / "data" / "many.jsonl").write_text('{"text": "t", "label": "a"}\n' * 4000)
    assert "FTC105" in findings(write_spec, text)
    (tmp_path / "data" / "many.jsonl").write_text('{"text": "t", "label": "a"}\n' * 6000)
    assert "FTC105" not in findings(write_spec, text)  # more rows than lint reads: the count is unknown


# ---------------------------------------------------------------- FTC120 on every path key


@pytest.mark.parametrize(
    "extra",
    [
        "model:\n  model_selector_output: ./models/tiny\n  gguf_file: ../../../etc/passwd\n",
        "lora:\n  apply_lora: true\n  from_peft_checkpoint: ../adapter\n",
        "fsdp:\n  enable_fsdp: true\n  dist_checkpoint_root_folder: ../ckpt\n",
        "tracking:\n  profiler_dir: ../../traces\n",
        "targets:\n  slurm:\n    venv: ../../venv\n",
        "targets:\n  slurm:\n    output: ../logs/%j.out\n",
        "targets:\n  slurm:\n    error: ../logs/%j.err\n",
        "targets:\n  ray:\n    storage_path: ../ray\n",
    ],
)
def test_dotdot_is_refused_in_every_path(extra: str, write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path)
    text = MINIMAL.replace("model: ./models/tiny\n", "") if extra.startswith("model:") else MINIMAL
    (escape,) = findings(write_spec, text + extra)["FTC120"]
    assert escape.path[-1] == extra.strip().rsplit("\n", 1)[-1].split(":")[0].strip()
    assert "leads outside" in escape.message


def test_gguf_file_stays_inside_the_model_folder(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path)
    text = "task: text_classification\ndata:\n  preprocess_output: data\nmodel:\n  model_selector_output: /opt/models/x\n  gguf_file: {}\n"
    assert "FTC120" not in findings(write_spec, text.format("q4/model.gguf"))
    assert "FTC120" in findings(write_spec, text.format("../y/model.gguf"))


def test_a_relative_symlink_out_of_the_folder_escapes(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (project / "runs").symlink_to("../elsewhere")
    (project / "inside").mkdir()
    (project / "alias").symlink_to("inside")
    spec = project / "spec.yaml"

    def escapes(output_dir: str) -> bool:
        spec.write_text(MINIMAL + f"checkpointing:\n  output_dir: {output_dir}\n")
        return "FTC120" in {f.rule for f in run_rules(load_resolved(spec))}

    assert escapes("runs/model")  # runs -> ../elsewhere
    assert not escapes("alias/model")  # alias -> inside
    assert not escapes("alias/../inside")


def test_a_symlink_to_an_absolute_path_counts_as_that_path(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """As an absolute model path is allowed, so is a link to one (examples/prepare_demo.py links its model)."""
    workspace(tmp_path)
    (tmp_path / "linked").symlink_to(tmp_path / "models" / "tiny")
    assert "FTC120" not in findings(write_spec, MINIMAL.replace("./models/tiny", "./linked"))


def test_a_symlink_loop_is_an_escape_not_a_hang(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    assert "FTC120" in findings(write_spec, MINIMAL + "tracking:\n  profiler_dir: a/traces\n")


def test_ray_working_dir_may_hold_the_spec_folder(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    assert "FTC120" not in findings(write_spec, MINIMAL + "targets:\n  ray:\n    working_dir: ..\n")


@pytest.mark.parametrize(
    ("target", "option"), [("ray", "storage_path"), ("slurm", "venv"), ("slurm", "output"), ("slurm", "error")]
)
def test_a_targets_path_options_stay_inside(write_spec: Callable[..., Path], target: str, option: str) -> None:
    """The options each target declares as paths (its options section's path_options) are checked like the spec's."""
    outside = [f.key for f in findings(write_spec, MINIMAL + f"targets:\n  {target}:\n    {option}: ../x\n")["FTC120"]]
    assert outside == [f"targets.{target}.{option}"]
    assert "FTC120" not in findings(write_spec, MINIMAL + f"targets:\n  {target}:\n    {option}: x\n")


# ---------------------------------------------------------------- model-family rules and the ZeRO stage


def test_zero_stage_comes_from_the_deepspeed_file(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path, "phi")
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    base = MINIMAL + "deepspeed:\n  apply_deepspeed: true\n  deepspeed: ds.json\n"
    found = findings(write_spec, base)
    assert "FTC128" in found and "FTC124" not in found
    assert {"FTC124", "FTC128"} <= set(findings(write_spec, base + "lora:\n  apply_lora: true\n"))
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    assert "FTC128" not in findings(write_spec, base + "  deepspeed_stage: 3\n")  # ignored: FTC127 says so
    assert "FTC127" in findings(write_spec, base + "  deepspeed_stage: 3\n")


@pytest.mark.parametrize("family, fires", [("llama", False), ("gpt_oss", False), ("bert", True), ("phi3", True)])
def test_quantization_families(family: str, fires: bool, write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path, family)
    assert ("FTC129" in findings(write_spec, MINIMAL + "precision:\n  quantization: 8bit\n")) == fires


def test_quantization_turns_lora_on_unless_the_spec_says_false(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path, "llama")
    resolved = load_resolved(write_spec(MINIMAL + "precision:\n  quantization: 4bit\n"))
    assert resolved.spec.lora.apply_lora and "FTC140" not in {f.rule for f in run_rules(resolved)}
    (off,) = findings(write_spec, MINIMAL + "precision:\n  quantization: 4bit\nlora:\n  apply_lora: false\n")["FTC140"]
    assert off.path == ("lora", "apply_lora")


# ---------------------------------------------------------------- settings without effect


def test_num_freeze_layers_without_freeze_layers(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path)
    (unused,) = findings(write_spec, MINIMAL + "training:\n  num_freeze_layers: 4\n")["FTC141"]
    assert unused.path == ("training", "num_freeze_layers")


def test_max_grad_norm_without_clipping(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path)
    (unused,) = findings(write_spec, MINIMAL + "training:\n  gradient_clipping: false\n  max_grad_norm: 0.5\n")["FTC143"]
    assert unused.path == ("training", "max_grad_norm")


def test_save_total_limit_with_anyscale_checkpoints_needs_no_evaluation(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path)
    text = MINIMAL + "evaluation:\n  run_validation: false\ncheckpointing:\n  save_total_limit: 2\n  checkpoint_every_n_epochs: 1\n"
    assert "FTC144" not in findings(write_spec, text)


def test_too_little_training_data_to_hold_out_validation(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path)
    (tmp_path / "data" / "one.jsonl").write_text('{"text": "t", "label": "a"}\n')
    (few,) = findings(write_spec, "task: text_classification\nmodel: ./models/tiny\ndata:\n  train_file_path: data/one.jsonl\n")["FTC134"]
    assert few.path == ("data", "train_file_path") and "1 row(s)" in few.message


# ---------------------------------------------------------------- lint.ignore


def test_an_unknown_rule_id_is_an_error_with_a_suggestion(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    (error,) = schema_errors(write_spec, MINIMAL + "lint:\n  ignore:\n    FTC1077: typo\n")
    assert "spec.yaml:8:5: lint.ignore.FTC1077: unknown rule 'FTC1077' (did you mean FTC107?)" in error


def test_target_rule_ids_may_be_ignored(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    assert {"FTC201", "FTC301", "FTC401", "FTC501"} <= rule_ids()
    load_resolved(write_spec(MINIMAL + "lint:\n  ignore:\n    FTC406: the output folder is on shared storage\n"))


@pytest.mark.parametrize("reason", ['""', "'   '", "null"])
def test_an_ignore_needs_a_reason(reason: str, write_spec: Callable[..., Path], tmp_path: Path) -> None:
    errors = schema_errors(write_spec, MINIMAL + f"lint:\n  ignore:\n    FTC104: {reason}\n")
    assert len(errors) == 1 and "lint.ignore.FTC104" in errors[0]


def test_a_literal_secret_cannot_be_silenced(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    token = "hf_" + "abcdefghijklmnopqrstuvwxyz0123456789AB"
    spec = write_spec(MINIMAL + f"env:\n  vars:\n    HF_TOKEN: {token}\nlint:\n  ignore:\n    FTC106: it is a test token\n")
    (finding,) = lint_file(spec, []).findings
    assert finding.key == "lint.ignore.FTC106" and "cannot be silenced" in finding.message
    assert token not in finding.message
