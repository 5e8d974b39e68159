"""Lint rules: each one fires on the combination it is about, and stays quiet otherwise."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftc.compiler.build import load_resolved
from ftc.spec.rules import RULES, Finding, run_rules

from tests.conftest import MINIMAL

# DeepSpeed files of the FTC15x cases, in the workspace's folder.
_DS_AUTO = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "zero_optimization": {"stage": 2}}
DEEPSPEED_FILES: dict[str, dict[str, Any] | str] = {
    "ds_auto.json": _DS_AUTO,
    "ds_broken.json": "{not json",
    "ds_micro64.json": {**_DS_AUTO, "train_micro_batch_size_per_gpu": 64},
    "ds_typo.json": {**_DS_AUTO, "zero_optimisation": {"stage": 3}},
    "ds_refused.json": {**_DS_AUTO, "zero_optimization": {"stage": 2, "overlap_comm_typo": True}},
}


def _ds(name: str) -> str:
    return f"deepspeed:\n  apply_deepspeed: true\n  deepspeed: {name}\n"


# rule id -> (spec text appended to MINIMAL that triggers it, a variant that does not)
CASES: dict[str, tuple[str, str]] = {
    "FTC101": ("evaluation:\n  evaluation_strategy: steps\n", "evaluation:\n  evaluation_strategy: steps\n  eval_steps: 10\n"),
    "FTC102": ("lora:\n  apply_lora: false\n  lora_r: 4\n", "lora:\n  apply_lora: true\n  lora_r: 4\n"),
    "FTC103": ("deepspeed:\n  deepspeed: ds.json\n", "deepspeed:\n  apply_deepspeed: true\n  deepspeed: ds.json\n"),
    "FTC104": ("tracking:\n  flop_counter: true\n  use_profiler: true\n", "tracking:\n  use_profiler: true\n"),
    "FTC105": ("training:\n  max_steps: 10\noptimizer:\n  warmup_steps: 10\n", "training:\n  max_steps: 10\noptimizer:\n  warmup_steps: 2\n"),
    "FTC106": ("env:\n  vars:\n    KEY: sk-abcdefghijklmnopqrstuvwxyz123456\n", "env:\n  secrets: [OPENAI_API_KEY]\n"),
    "FTC107": ("ort:\n  apply_ort: true\n", "ort:\n  apply_ort: false\n"),
    "FTC108": ("early_stopping:\n  early_stopping_patience: 3\n", "early_stopping:\n  apply_early_stopping: true\n  early_stopping_patience: 3\n"),
    "FTC109": ("tracking:\n  logging_steps: 10\n", "tracking:\n  logging_strategy: steps\n  logging_steps: 10\n"),
    "FTC110": ("deepspeed:\n  apply_deepspeed: true\ntraining:\n  auto_find_batch_size: true\n", "training:\n  auto_find_batch_size: true\n"),
    "FTC111": ("early_stopping:\n  apply_early_stopping: true\nevaluation:\n  evaluation_strategy: 'no'\n", "early_stopping:\n  apply_early_stopping: true\n"),
    "FTC112": ("deepspeed:\n  apply_deepspeed: true\nfsdp:\n  enable_fsdp: true\n", "fsdp:\n  enable_fsdp: true\n"),
    "FTC113": ("training:\n  max_steps: 5\ntracking:\n  use_profiler: true\n", "training:\n  max_steps: 7\ntracking:\n  use_profiler: true\n"),
    "FTC114": ("training:\n  max_steps: 3\ntracking:\n  flop_counter: true\n", "training:\n  max_steps: 4\ntracking:\n  flop_counter: true\n"),
    "FTC115": ("lora:\n  apply_lora: true\n  peft_method: prefix\n", "lora:\n  apply_lora: true\n  peft_method: llama_adapter\n"),
    "FTC116": ("precision:\n  quantization: 4bit\nresources:\n  device: cpu\n", "precision:\n  quantization: 4bit\nresources:\n  device: gpu\n"),
    "FTC117": ("lora:\n  apply_lora: false\n  from_peft_checkpoint: adapter/\n", "lora:\n  apply_lora: true\n  from_peft_checkpoint: adapter/\n"),
    "FTC118": ("fsdp:\n  sharding_strategy: NO_SHARD\n", "fsdp:\n  enable_fsdp: true\n  sharding_strategy: NO_SHARD\n"),
    "FTC119": (
        "precision:\n  use_fast_kernels: true\n  precision: 32\n",
        "precision:\n  use_fast_kernels: true\n",  # auto: bf16 or fp16 on a GPU
    ),
    "FTC120": ("checkpointing:\n  output_dir: ../../elsewhere\n", "checkpointing:\n  output_dir: runs/../outputs\n"),
    "FTC121": ("training:\n  min_update_steps: 100\n  num_train_epochs: 2\n", "training:\n  min_update_steps: 100\n"),
    "FTC122": ("precision: fp16\nresources:\n  device: cpu\n", "precision: bf16\nresources:\n  device: cpu\n"),
    "FTC123": ("evaluation:\n  evaluation_strategy: 'no'\n  metric_for_best_model: accuracy\n", "evaluation:\n  metric_for_best_model: accuracy\n"),
    "FTC124": (
        "deepspeed:\n  apply_deepspeed: true\n  deepspeed_stage: 3\nlora:\n  apply_lora: true\n",
        "deepspeed:\n  apply_deepspeed: true\n  deepspeed_stage: 2\nlora:\n  apply_lora: true\n",
    ),
    "FTC125": ("lora:\n  apply_lora: true\n", "lora:\n  apply_lora: true\n  target_modules: [dense]\n"),
    "FTC126": ("", "lora:\n  apply_lora: true\n"),
    "FTC127": (
        "deepspeed:\n  apply_deepspeed: true\n  deepspeed: ds.json\n  deepspeed_stage: 3\n",
        "deepspeed:\n  apply_deepspeed: true\n  deepspeed_stage: 3\n",
    ),
    "FTC128": ("deepspeed:\n  apply_deepspeed: true\n  deepspeed_stage: 3\n", "deepspeed:\n  apply_deepspeed: true\n"),
    "FTC129": ("precision:\n  quantization: 4bit\n", ""),
    "FTC130": ("data:\n  train_file_path: data/train.jsonl\n  label_key: topic\n", "data:\n  train_file_path: data/train.jsonl\n"),
    "FTC131": ("data:\n  train_file_path: data/train.jsonl\n  validation_file_path: data/odd.jsonl\n", ""),
    "FTC132": ("data:\n  train_file_path: data/train.jsonl\n  max_seq_length: 1024\n", "data:\n  train_file_path: data/train.jsonl\n  max_seq_length: 512\n"),
    "FTC133": (
        "data:\n  train_file_path: data/train.jsonl\n  validation_file_path: data/big.jsonl\nevaluation:\n  evaluation_strategy: steps\n  eval_steps: 1\n",
        "data:\n  train_file_path: data/train.jsonl\n  validation_file_path: data/big.jsonl\nevaluation:\n  evaluation_strategy: steps\n  eval_steps: 50\n",
    ),
    "FTC134": ("data:\n  train_file_path: data/train.jsonl\n  validation_file_path: data/empty.jsonl\n", ""),
    "FTC135": (
        "data:\n  train_file_path: data/train.jsonl\n  max_seq_length: 65536\n",
        "data:\n  train_file_path: data/train.jsonl\n  max_seq_length: 32768\n",
    ),
    "FTC140": ("precision:\n  quantization: 4bit\nlora:\n  apply_lora: false\n", "precision:\n  quantization: 4bit\n"),
    "FTC141": ("training:\n  freeze_layers: true\nlora:\n  apply_lora: true\n", "training:\n  freeze_layers: true\n"),
    "FTC142": (
        "fsdp:\n  enable_fsdp: true\n  sharding_group_size: 2\n",
        "fsdp:\n  enable_fsdp: true\n  hsdp: true\n  sharding_strategy: HYBRID_SHARD\n  sharding_group_size: 2\n",
    ),
    "FTC143": ("training:\n  gradient_clipping: true\n  max_grad_norm: 0\n", "training:\n  max_grad_norm: 0\n"),
    "FTC144": (
        "evaluation:\n  run_validation: false\ncheckpointing:\n  save_total_limit: 2\n",
        "checkpointing:\n  save_total_limit: 2\n",
    ),
    "FTC145": (
        "fsdp:\n  enable_fsdp: true\n  sharding_strategy: HYBRID_SHARD\nresources:\n  device: cpu\n",
        "fsdp:\n  enable_fsdp: true\n  sharding_strategy: HYBRID_SHARD\nresources:\n  device: gpu\n",
    ),
    "FTC146": (
        "fsdp:\n  enable_fsdp: true\n  hsdp: true\n  sharding_strategy: HYBRID_SHARD\n  sharding_group_size: 8\n"
        "  replica_group_size: 3\nresources:\n  nodes: 4\n  processes_per_node: 8\n",
        "fsdp:\n  enable_fsdp: true\n  hsdp: true\n  sharding_strategy: HYBRID_SHARD\n  sharding_group_size: 8\n"
        "  replica_group_size: 4\nresources:\n  nodes: 4\n  processes_per_node: 8\n",
    ),
    "FTC147": ("env:\n  vars:\n    PRICE: 'cost $5'\n", "env:\n  vars:\n    LD_LIBRARY_PATH: '/opt/lib:$LD_LIBRARY_PATH'\n"),
    "FTC148": ("resources:\n  worker_resources: {GPU: 1}\n", "targets:\n  ray:\n    worker_resources: {GPU: 1}\n"),
    "FTC150": (_ds("ds_broken.json"), _ds("ds_auto.json")),
    "FTC151": (_ds("ds_micro64.json"), _ds("ds_auto.json")),
    "FTC152": (_ds("ds_typo.json"), _ds("ds_auto.json")),
    "FTC153": (_ds("ds_refused.json"), _ds("ds_auto.json")),
    "FTC160": ("checkpointing:\n  output_dir: ftp://host/runs\n", "checkpointing:\n  output_dir: s3://bucket/runs\n"),
    "FTC161": ("checkpointing:\n  output_dir: s3://bucket/runs\n", "checkpointing:\n  output_dir: gs://bucket/runs\n"),
    "FTC162": (
        "checkpointing:\n  output_dir: s3://bucket/runs\n",
        "checkpointing:\n  output_dir: s3://bucket/runs\nenv:\n  secrets: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]\n",
    ),
    "FTC166": (
        "checkpointing:\n  output_dir: /mnt/local_storage/runs\nresources:\n  nodes: 2\n",
        "checkpointing:\n  output_dir: /mnt/local_storage/runs\nresources:\n  nodes: 1\n",
    ),
    "FTC170": (
        "data:\n  train_file_path: data/train.jsonl\n  validation_file_path: data/validation.jsonl\n  streaming: true\n",
        "data:\n  train_file_path: data/train.jsonl\n  validation_file_path: data/validation.jsonl\n  streaming: true\n"
        "training:\n  max_steps: 10\n",
    ),
    "FTC171": (
        "data:\n  train_file_path: data/train.jsonl\n  validation_file_path: data/validation.jsonl\n  streaming: true\n",
        "data:\n  train_file_path: data/train.jsonl\n  validation_file_path: data/validation.jsonl\n",
    ),
    "FTC165": (
        "checkpointing:\n  output_dir: s3://bucket/runs\nfsdp:\n  enable_fsdp: true\nresources:\n  nodes: 2\n",
        "checkpointing:\n  output_dir: s3://bucket/runs\nfsdp:\n  enable_fsdp: true\nresources:\n  nodes: 1\n",
    ),
}
# Rules whose trigger needs a model family; the fixture model's config.json says which.
FAMILY = {"FTC125": "xlnet", "FTC126": "mixtral", "FTC128": "phi", "FTC140": "llama"}
# Rules of another task than MINIMAL's.
TASK = {"FTC135": "causal_lm", "FTC170": "causal_lm"}
# Rules about a package missing where lint runs: the test hides it (the dev environment installs every one).
HIDDEN_PACKAGE = {"FTC161": "s3fs"}


def workspace(root: Path, family: str = "bert") -> None:
    (root / "models" / "tiny").mkdir(parents=True)
    (root / "models" / "tiny" / "config.json").write_text(json.dumps({"model_type": family, "max_position_embeddings": 512}))
    (root / "data").mkdir()
    rows = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(20)]
    (root / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "data" / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    (root / "data" / "odd.jsonl").write_text(json.dumps({"text": "x", "label": "zebra"}) + "\n")
    (root / "data" / "big.jsonl").write_text((json.dumps(rows[0]) + "\n") * 10_000)
    (root / "data" / "empty.jsonl").write_text("\n")
    for name, config in DEEPSPEED_FILES.items():
        (root / name).write_text(config if isinstance(config, str) else json.dumps(config, indent=2))


def hide_package(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make `importlib.util.find_spec(name)` say that package `name` is not installed."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda module, *a: None if module == name else find_spec(module, *a))


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_and_stays_quiet(
    rule_id: str, write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if rule_id == "FTC153" and importlib.util.find_spec("deepspeed") is None:
        pytest.skip("FTC153 asks DeepSpeed itself: deepspeed is not installed")
    if rule_id in HIDDEN_PACKAGE:
        hide_package(monkeypatch, HIDDEN_PACKAGE[rule_id])
    trigger, quiet = CASES[rule_id]
    family = FAMILY.get(rule_id, "bert")
    workspace(tmp_path, family)
    base = MINIMAL.split("data:")[0].replace("text_classification", TASK.get(rule_id, "text_classification"))
    default_data = "data:\n  train_file_path: data/train.jsonl\n  validation_file_path: data/validation.jsonl\n"

    def spec_text(extra: str) -> str:
        return base + ("" if "data:\n" in extra else default_data) + extra

    fired = {f.rule: f for f in run_rules(load_resolved(write_spec(spec_text(trigger))))}
    assert rule_id in fired, f"{rule_id} did not fire on:\n{trigger}"
    quiet_rules = {f.rule for f in run_rules(load_resolved(write_spec(spec_text(quiet), name="quiet.yaml")))}
    assert rule_id not in quiet_rules, f"{rule_id} fired on:\n{quiet}"


def test_every_rule_has_a_case_and_docs() -> None:
    assert set(RULES) == set(CASES)
    for r in RULES.values():
        assert r.doc and r.title and r.severity in ("error", "warning")


def test_lint_ignore_silences_a_rule(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    workspace(tmp_path)
    text = MINIMAL + "ort:\n  apply_ort: true\nlint:\n  ignore:\n    FTC107: testing\n"
    assert "FTC107" not in {f.rule for f in run_rules(load_resolved(write_spec(text)))}


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("lora:\n  apply_lora: true\n", "lora.merge_lora_weights"),
        ("resources:\n  device: cpu\nfsdp:\n  checkpoint_type: FULL_STATE_DICT\n", "fsdp.checkpoint_type"),
    ],
)
def test_fsdp_limits_name_the_key(write_spec: Callable[..., Path], tmp_path: Path, extra: str, key: str) -> None:
    workspace(tmp_path)
    text = MINIMAL + extra.replace("fsdp:\n", "fsdp:\n  enable_fsdp: true\n") + ("" if "fsdp:" in extra else "fsdp:\n  enable_fsdp: true\n")
    found = [f for f in run_rules(load_resolved(write_spec(text))) if f.rule == "FTC145"]
    assert [f.key for f in found] == [key]
    quiet = MINIMAL + "fsdp:\n  enable_fsdp: true\nlora:\n  apply_lora: true\n  merge_lora_weights: false\n"
    assert not [f for f in run_rules(load_resolved(write_spec(quiet, name="quiet.yaml"))) if f.rule == "FTC145"]


HSDP = "fsdp:\n  enable_fsdp: true\n  hsdp: true\n  sharding_strategy: HYBRID_SHARD\n"


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ("  sharding_group_size: 8\n  replica_group_size: 3\n", "8 x replica_group_size 3 = 24, but the job has 32 processes"),
        ("  sharding_group_size: 16\n  replica_group_size: 2\n", "is not supported: hybrid sharding shards within each node"),
        ("  sharding_group_size: 8\n", None),  # replica 0: the nodes
        ("", None),
    ],
)
def test_hsdp_groups_must_be_the_nodes(
    write_spec: Callable[..., Path], tmp_path: Path, groups: str, message: str | None
) -> None:
    workspace(tmp_path)
    text = MINIMAL + HSDP + groups + "resources:\n  nodes: 4\n  processes_per_node: 8\n  device: gpu\n"
    found = [f for f in run_rules(load_resolved(write_spec(text))) if f.rule == "FTC146"]
    if message is None:
        assert not found
    else:
        (finding,) = found
        assert finding.severity == "error" and message in finding.message


def _causal_lm(tmp_path: Path, positions: int) -> str:
    workspace(tmp_path, "llama")
    config = {"model_type": "llama", "max_position_embeddings": positions}
    (tmp_path / "models" / "tiny" / "config.json").write_text(json.dumps(config))
    return MINIMAL.replace("text_classification", "causal_lm")


def test_causal_lm_default_context_yields_to_a_smaller_model(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    # The 4096 default is not an FTC132 error on a 512-position model; the same value given is.
    text = _causal_lm(tmp_path, 512)
    assert "FTC132" not in {f.rule for f in run_rules(load_resolved(write_spec(text)))}
    given = text.replace("data:\n", "data:\n  max_seq_length: 4096\n")
    assert "FTC132" in {f.rule for f in run_rules(load_resolved(write_spec(given, name="given.yaml")))}


def test_causal_lm_model_maximum_that_is_huge_is_warned(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    text = _causal_lm(tmp_path, 131072)

    def rules(spec_text: str, name: str) -> dict[str, Finding]:
        return {f.rule: f for f in run_rules(load_resolved(write_spec(spec_text, name=name)))}

    assert "FTC135" not in rules(text, "default.yaml")  # the default is 4096
    huge = rules(text.replace("data:\n", "data:\n  max_seq_length: -1\n"), "all.yaml")["FTC135"]
    assert huge.severity == "warning" and "packed rows of 131072 tokens" in huge.message


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("checkpointing:\n  output_dir: /tmp/runs\n", "checkpointing.output_dir"),
        ("checkpointing:\n  output_dir: /dev/shm/x/../runs\n", "checkpointing.output_dir"),
        ("checkpointing:\n  output_dir: runs\n", None),  # relative: the spec's folder, shared under SLURM
        ("checkpointing:\n  output_dir: runs\ntargets:\n  enabled: [ray]\n", "checkpointing.output_dir"),
        ("checkpointing:\n  output_dir: /tmpfiles/runs\ntargets:\n  enabled: [ray]\n", None),
        ("checkpointing:\n  output_dir: s3://bucket/runs\ntargets:\n  enabled: [ray]\n", None),
        # under Ray the checkpoints are restored from storage_path: a shared one makes a node-local output_dir safe
        ("checkpointing:\n  output_dir: /mnt/local_storage/out\ntargets:\n  ray:\n    storage_path: /shared/ray\n", None),
        ("checkpointing:\n  output_dir: /shared/out\ntargets:\n  ray:\n    storage_path: ray_runs\n", "targets.ray.storage_path"),
        ("checkpointing:\n  output_dir: /shared/out\ntargets:\n  ray:\n    storage_path: /var/tmp/ray\n", "targets.ray.storage_path"),
    ],
)
def test_node_local_checkpoints_of_a_multi_node_job(
    write_spec: Callable[..., Path], tmp_path: Path, extra: str, key: str | None
) -> None:
    workspace(tmp_path)
    found = [f for f in run_rules(load_resolved(write_spec(MINIMAL + "resources:\n  nodes: 2\n" + extra))) if f.rule == "FTC166"]
    assert [f.key for f in found] == ([key] if key else [])
    if key:
        assert found[0].severity == "warning" and "a resume on other nodes" in found[0].message and "finds none" in found[0].message
