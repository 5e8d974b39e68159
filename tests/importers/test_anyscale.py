"""Anyscale LLMForge configs imported: the spec lints clean and trains with LLMForge's effective values.

The expected values are computed here, apart from the importer: LLMForge's documented defaults
(docs.anyscale.com/reference/finetuning-config-api, as recorded in fixtures/anyscale/SOURCES.md) overridden by
the file's values (read with yaml.safe_load, as LLMForge reads it) and by the DeepSpeed JSON it names.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ftc.cli.app import app
from ftc.compiler.build import load_resolved
from ftc.importers import ImportFailed
from ftc.importers.anyscale import IMPORTER

FIXTURES = Path(__file__).parent / "fixtures" / "anyscale"
CONFIGS = ["llama-3-70b-full.yaml", "llama-3-8b-lora-4xA10.yaml"]
runner = CliRunner()

LLMFORGE_DEFAULTS: dict[str, Any] = {
    "eval_batch_size_per_device": 1,
    "lr_scheduler_type": "cosine",
    "num_warmup_steps": 10,
    "padding": "longest",
    "flash_attention_2": True,
    "output_dir": "/mnt/local_storage",
}
LORA_DEFAULTS: dict[str, Any] = {"lora_alpha": 16, "lora_dropout": 0.05}
# LLMForge name -> the resolved ftc parameter that must hold its effective value.
TOP_LEVEL = {
    "model_id": "model.model_selector_output",
    "train_path": "data.train_file_path",
    "valid_path": "data.validation_file_path",
    "context_length": "data.max_seq_length",
    "num_epochs": "training.num_train_epochs",
    "train_batch_size_per_device": "training.per_device_train_batch_size",
    "eval_batch_size_per_device": "training.per_device_eval_batch_size",
    "learning_rate": "optimizer.learning_rate",
    "lr_scheduler_type": "optimizer.lr_scheduler_type",
    "num_warmup_steps": "optimizer.warmup_steps",
    "num_checkpoints_to_keep": "checkpointing.save_total_limit",
    "flash_attention_2": "precision.use_fast_kernels",
    "output_dir": "checkpointing.output_dir",
    "worker_resources": "targets.ray.worker_resources",
}
LORA = {"r": "lora.lora_r", "lora_alpha": "lora.lora_alpha", "lora_dropout": "lora.lora_dropout",
        "target_modules": "lora.target_modules", "bias": "lora.bias", "modules_to_save": "lora.modules_to_save"}


def _resolved_value(spec: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        spec = getattr(spec, part)
    return spec


def _expected(source: Path) -> dict[str, Any]:
    """ftc parameter -> LLMForge's effective value for `source`."""
    config = {**LLMFORGE_DEFAULTS, **yaml.safe_load(source.read_text())}
    expected = {ftc: config[name] for name, ftc in TOP_LEVEL.items() if name in config}
    expected["optimizer.learning_rate"] = float(config["learning_rate"])  # pydantic reads "5e-6" as a number
    expected["data.batching_strategy"] = "padding"
    expected["data.pad_to_max_length"] = config["padding"] == "max_length"
    expected["lora.apply_lora"] = "lora_config" in config
    if "lora_config" in config:
        expected["lora.merge_lora_weights"] = False  # LLMForge keeps the adapter (lora_fine_tuning/<model_id>:...)
        lora = {**LORA_DEFAULTS, **config["lora_config"]}
        expected |= {ftc: lora[name] for name, ftc in LORA.items() if name in lora}
    deepspeed = json.loads((FIXTURES / config["deepspeed"]["config_path"]).read_text())
    zero = deepspeed["zero_optimization"]
    expected |= {
        "deepspeed.apply_deepspeed": True,
        "deepspeed.deepspeed_stage": str(zero["stage"]),
        "deepspeed.offload_optimizer": "offload_optimizer" in zero,
        "deepspeed.offload_param": "offload_param" in zero,
        "precision.precision": "bf16" if deepspeed["bf16"]["enabled"] else "fp16",
    }
    return expected


@pytest.mark.parametrize("name", CONFIGS)
def test_the_imported_spec_trains_with_llmforge_effective_values(name: str, tmp_path: Path) -> None:
    out = tmp_path / "spec.yaml"
    result = runner.invoke(app, ["import", str(FIXTURES / name), "-o", str(out)])
    assert result.exit_code == 0, result.output
    lint = runner.invoke(app, ["lint", str(out), "-t", "all"])
    assert lint.exit_code == 0 and "0 error(s)" in lint.stdout, lint.output
    spec = load_resolved(out).spec
    for key, value in _expected(FIXTURES / name).items():
        assert _resolved_value(spec, key) == value, key
    assert spec.resources.nodes * spec.resources.processes_per_node == yaml.safe_load((FIXTURES / name).read_text())[
        "num_devices"
    ]


def test_each_line_says_where_its_value_came_from() -> None:
    text = _text("llama-3-70b-full.yaml")
    lines = {line.split(":")[0].strip(): line for line in text.splitlines()}
    assert lines["lr_scheduler_type"].endswith("# LLMForge default lr_scheduler_type: \"cosine\"")
    assert lines["learning_rate"].endswith("# learning_rate")
    assert lines["deepspeed_stage"].endswith("# from deepspeed config deepspeed_configs/zero_3_offload_optim.json")
    assert lines["accelerator_type"] == "  accelerator_type: A10G  # worker_resources"
    assert "#   dataset_size_scaling_factor: 10000  -- an internal LLMForge flag" in text.splitlines()


def test_the_accelerator_shape_gives_nodes_of_that_many_gpus() -> None:
    text = _text("llama-3-8b-lora-4xA10.yaml")
    assert "  nodes: 1  # num_devices / the 4 GPUs of the accelerator shape" in text
    assert "  processes_per_node: 4  # worker_resources accelerator shape" in text


def test_the_same_file_gives_the_same_bytes() -> None:
    assert _text("llama-3-8b-lora-4xA10.yaml") == _text("llama-3-8b-lora-4xA10.yaml")


def _text(name: str) -> str:
    result = runner.invoke(app, ["import", str(FIXTURES / name)])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("task: preference_tuning\n", r"job.yaml:\d+:1: task: ftc trains causal_lm and instruction_tuning only"),
        ("lr_scheduler_type: step\n", r"lr_scheduler_type: 'step' is refused by Anyscale LLMForge; it accepts linear, cosine"),
        ("deepspeed:\n  config_path: missing.json\n", r"deepspeed.config_path: missing.json is not found next to"),
        ("learning_rate: fast\n", r"job.yaml:\d+:1: learning_rate: 'fast' is not a float"),
    ],
)
def test_bad_values_name_the_file_line_and_key(tmp_path: Path, extra: str, message: str) -> None:
    source = tmp_path / "job.yaml"
    shutil.copytree(FIXTURES / "deepspeed_configs", tmp_path / "deepspeed_configs")
    source.write_text((FIXTURES / "llama-3-8b-lora-4xA10.yaml").read_text() + extra)
    with pytest.raises(ImportFailed, match=message):
        IMPORTER.convert(source)


def test_a_file_without_padding_gets_llmforge_padding_not_ftc_packing() -> None:
    spec_lines = _text("llama-3-70b-full.yaml").splitlines()
    assert "  batching_strategy: padding  # LLMForge default padding: \"longest\" (LLMForge pads batches, it does not pack)" in (
        spec_lines
    )
