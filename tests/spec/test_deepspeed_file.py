"""A user's DeepSpeed file against the spec: what transformers would refuse (explicit values that
disagree with TrainingArguments), what DeepSpeed would refuse (its own config models, on the file
with its "auto" values filled) and what DeepSpeed silently ignores (unknown top-level keys)."""

from __future__ import annotations

import collections.abc
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ftc.compiler.build import load_resolved
from ftc.spec.deepspeed_file import (
    TOP_LEVEL_KEYS,
    Problem,
    engine_refusal,
    filled,
    problems,
)
from ftc.spec.model import SpecBase

SPEC = """\
task: text_classification
model: ./models/tiny
data:
  train_file_path: data/train.jsonl
training:
  per_device_train_batch_size: 8
  gradient_accumulation_steps: 2
optimizer:
  learning_rate: 0.0003
precision:
  precision: bf16
deepspeed:
  apply_deepspeed: true
  deepspeed: ds.json
"""
GOOD = {
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "bf16": {"enabled": "auto"},
    "fp16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_gather_16bit_weights_on_model_save": True},
}
NEEDS_DEEPSPEED = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")


@pytest.fixture
def check(write_spec: Callable[..., Path], tmp_path: Path) -> Callable[..., list[Problem]]:
    """problems() of a ds.json holding `config` for SPEC on `processes` processes."""

    def run(config: dict[str, Any] | str, processes: int = 2, engine: bool = False, spec: str = SPEC) -> list[Problem]:
        ds = tmp_path / "ds.json"
        ds.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
        resolved = load_resolved(write_spec(spec))
        return problems(ds, resolved.spec, world_size=processes, engine=engine)

    return run


def _spec(write_spec: Callable[..., Path], text: str = SPEC) -> SpecBase:
    return load_resolved(write_spec(text)).spec


def test_auto_values_and_matching_values_pass(check: Callable[..., list[Problem]]) -> None:
    assert check(GOOD) == []
    explicit = {**GOOD, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 2, "train_batch_size": 32}
    assert check(explicit) == []


def test_batch_arithmetic_and_values_the_trainer_owns(check: Callable[..., list[Problem]]) -> None:
    found = check({**GOOD, "train_micro_batch_size_per_gpu": 64, "train_batch_size": 16,
                   "optimizer": {"type": "AdamW", "params": {"lr": 0.5}}})
    by_key = {p.key: p for p in found}
    assert set(by_key) == {"train_micro_batch_size_per_gpu", "train_batch_size", "optimizer.params.lr"}
    assert all(p.kind == "mismatch" for p in found)
    assert "is 64 but the run has 8 (training.per_device_train_batch_size)" in by_key["train_micro_batch_size_per_gpu"].message
    # 64 x 2 accumulation x 2 processes, from the file's own micro batch
    assert "is 16 but the run has 256" in by_key["train_batch_size"].message
    assert by_key["train_micro_batch_size_per_gpu"].line == 2  # the file's line, for file:line in the finding
    # the world size counts: 8 x 2 x 2 = 32 on two processes, 16 on one
    assert check({**GOOD, "train_batch_size": 16}, processes=1) == []
    assert [p.key for p in check({**GOOD, "train_batch_size": 16}, processes=2)] == ["train_batch_size"]


def test_precision(check: Callable[..., list[Problem]]) -> None:
    both = check({**GOOD, "fp16": {"enabled": True}, "bf16": {"enabled": True}})
    assert [p.kind for p in both].count("both_precisions") == 1
    assert any(p.key == "fp16.enabled" and "precision.precision is bf16" in p.message for p in both)
    off = check({**GOOD, "bf16": {"enabled": False}})
    assert [p.key for p in off] == ["bf16.enabled"] and "set it to \"auto\"" in off[0].message


def test_precision_auto_takes_a_half_precision_file(check: Callable[..., list[Problem]]) -> None:
    """The default precision, auto, is bf16 or fp16 on the GPU: a file that enables either one agrees with it."""
    auto = SPEC.replace("precision:\n  precision: bf16\n", "")
    assert check({**GOOD, "bf16": {"enabled": True}}, spec=auto) == []
    assert check({**GOOD, "fp16": {"enabled": True}}, spec=auto) == []
    assert [p.key for p in check({**GOOD, "bf16": {"enabled": True}}, spec=SPEC.replace("bf16", "'32'"))] == ["bf16.enabled"]


def test_unknown_top_level_keys_get_a_did_you_mean(check: Callable[..., list[Problem]]) -> None:
    found = check({**GOOD, "zero_optimisation": {"stage": 2}, "my_notes": "x"})
    assert {p.key: p.kind for p in found} == {"my_notes": "unknown_key", "zero_optimisation": "unknown_key"}
    typo = next(p for p in found if p.key == "zero_optimisation")
    assert "did you mean 'zero_optimization'?" in typo.message


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff"])
def test_unreadable_file(check: Callable[..., list[Problem]], text: str) -> None:
    found = check(text)
    assert [p.kind for p in found] == ["unreadable"]


def test_filled_config_is_what_transformers_would_pass(write_spec: Callable[..., Path]) -> None:
    config = filled(GOOD, _spec(write_spec))
    assert config["train_micro_batch_size_per_gpu"] == 8 and config["gradient_accumulation_steps"] == 2
    assert config["train_batch_size"] == 16  # one process: DeepSpeed's own check outside a launcher
    assert config["bf16"] == {"enabled": True} and config["fp16"] == {"enabled": False}
    assert config["optimizer"]["params"]["lr"] == 0.0003
    assert config["zero_optimization"]["reduce_bucket_size"] == 500_000_000
    assert GOOD["optimizer"]["params"]["lr"] == "auto"  # the caller's dict is left as it was


@NEEDS_DEEPSPEED
@pytest.mark.parametrize(
    ("zero", "expected"),
    [
        ({"stage": 2, "overlap_comm_typo": True}, "overlap_comm_typo: Extra inputs are not permitted"),
        ({"stage": 7}, "stage: Input should be"),
        ({"stage": 3, "offload_param": {"device": "gpu"}}, "offload_param.device: Input should be 'none', 'cpu' or 'nvme'"),
    ],
)
def test_deepspeed_itself_refuses_a_bad_section(check: Callable[..., list[Problem]], zero: dict[str, Any], expected: str) -> None:
    found = check({**GOOD, "zero_optimization": zero}, engine=True)
    assert [p.kind for p in found] == ["refused"]
    assert expected in found[0].message and "DeepSpeedZeroConfig" in found[0].message


@NEEDS_DEEPSPEED
def test_deepspeed_accepts_the_filled_good_file(write_spec: Callable[..., Path]) -> None:
    assert engine_refusal(filled(GOOD, _spec(write_spec))) is None
    # without filling, DeepSpeed itself refuses the "auto" strings: the filling is what makes the check fair
    assert engine_refusal(GOOD) is not None


@NEEDS_DEEPSPEED
def test_top_level_keys_are_the_ones_deepspeed_reads() -> None:
    """Record the keys DeepSpeedConfig looks up in a config (with and without optimizer and scheduler)."""
    from deepspeed.runtime.config import DeepSpeedConfig

    seen: set[str] = set()

    class Keys(collections.abc.KeysView):  # type: ignore[type-arg]
        def __contains__(self, key: object) -> bool:
            seen.add(str(key))
            return super().__contains__(key)

    class Recording(dict):  # type: ignore[type-arg]
        def get(self, key: Any, *default: Any) -> Any:
            seen.add(key)
            return super().get(key, *default)

        def __getitem__(self, key: Any) -> Any:
            seen.add(key)
            return super().__getitem__(key)

        def __contains__(self, key: object) -> bool:
            seen.add(str(key))
            return super().__contains__(key)

        def keys(self) -> Any:
            return Keys(self)

    base = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": 1}
    for extra in ({}, {"optimizer": {"type": "AdamW", "params": {}}, "scheduler": {"type": "WarmupLR", "params": {}}}):
        DeepSpeedConfig(Recording({**base, **extra}))
    # sequence_parallel_size is read only inside an initialised process group
    assert seen | {"sequence_parallel_size"} == TOP_LEVEL_KEYS
