"""Axolotl configs imported: the spec lints clean and trains with Axolotl's effective values.

The expected values are computed here, apart from the importer: Axolotl's defaults read from its pydantic config
models (src/axolotl/utils/schemas/, at the commit recorded in fixtures/axolotl/SOURCES.md) overridden by the
file's values (read with yaml.safe_load, as Axolotl reads it; a key with no value is None, that is not set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ftc.cli.app import app
from ftc.compiler.build import load_resolved
from ftc.importers import ImportFailed, ImportRefused, find_importer
from ftc.importers.axolotl import IMPORTER

FIXTURES = Path(__file__).parent / "fixtures" / "axolotl"
CONFIGS = ["lora-1b.yml", "qlora-1b.yml", "mistral-qlora.yml", "qlora-fsdp-70b.yaml"]
runner = CliRunner()

AXOLOTL_DEFAULTS: dict[str, Any] = {
    "sequence_len": 512,
    "val_set_size": 0.0,
    "sample_packing": False,
    "micro_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "num_epochs": 1.0,
    "weight_decay": 0.0,
    "lr_scheduler": "cosine",
    "output_dir": "./model-out",
    "gradient_checkpointing": False,
    "load_in_4bit": False,
    "load_in_8bit": False,
    "lora_dropout": 0.0,
    "seed": 42,
}
# Axolotl name -> the resolved ftc parameter that must hold its effective value.
SAME = {
    "base_model": "model.model_selector_output",
    "sequence_len": "data.max_seq_length",
    "micro_batch_size": "training.per_device_train_batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "weight_decay": "optimizer.weight_decay",
    "lr_scheduler": "optimizer.lr_scheduler_type",
    "output_dir": "checkpointing.output_dir",
    "gradient_checkpointing": "precision.gradient_checkpointing",
    "seed": "training.seed",
}
LORA = {"lora_r": "lora.lora_r", "lora_alpha": "lora.lora_alpha", "lora_dropout": "lora.lora_dropout",
        "lora_target_modules": "lora.target_modules"}


def _resolved_value(spec: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        spec = getattr(spec, part)
    return spec


def _expected(source: Path) -> dict[str, Any]:
    """ftc parameter -> Axolotl's effective value for `source`."""
    given = {k: v for k, v in yaml.safe_load(source.read_text()).items() if v is not None}
    config = {**AXOLOTL_DEFAULTS, **given}
    expected = {ftc: config[name] for name, ftc in SAME.items()}
    expected |= {
        "data.train_file_path": config["datasets"][0]["path"],
        "data.validation_split_ratio": config["val_set_size"],
        "data.batching_strategy": "packing" if config["sample_packing"] else "padding",
        "training.num_train_epochs": int(config["num_epochs"]),
        "training.per_device_eval_batch_size": config["micro_batch_size"],
        "optimizer.learning_rate": float(config["learning_rate"]),
        "evaluation.evaluation_strategy": "steps",  # evals_per_epoch is given
        "evaluation.evaluation_steps_interval": 1 / config["evals_per_epoch"],
        "lora.apply_lora": config.get("adapter") in ("lora", "qlora"),
        "lora.merge_lora_weights": False,  # Axolotl saves the adapter; `axolotl merge-lora` merges it
        "precision.quantization": "4bit" if config["load_in_4bit"] else "8bit" if config["load_in_8bit"] else None,
        "precision.use_fast_kernels": config.get("attn_implementation") == "flash_attention_2",
    }
    expected |= {ftc: config[name] for name, ftc in LORA.items() if name in config}
    if "fsdp_config" in config:
        fsdp = config["fsdp_config"]
        expected |= {
            "fsdp.enable_fsdp": True,
            "fsdp.fsdp_cpu_offload": fsdp["fsdp_offload_params"],
            "fsdp.low_cpu_fsdp": fsdp["fsdp_cpu_ram_efficient_loading"],
            "fsdp.checkpoint_type": fsdp["fsdp_state_dict_type"],
            "fsdp.sharding_strategy": fsdp["fsdp_sharding_strategy"],
            "fsdp.fsdp_activation_checkpointing": False,  # FSDPConfig.activation_checkpointing defaults to None
        }
    return expected


@pytest.mark.parametrize("name", CONFIGS)
def test_the_imported_spec_trains_with_axolotl_effective_values(name: str, tmp_path: Path) -> None:
    out = tmp_path / "spec.yaml"
    result = runner.invoke(app, ["import", str(FIXTURES / name), "-o", str(out)])
    assert result.exit_code == 0, result.output
    lint = runner.invoke(app, ["lint", str(out), "-t", "all"])
    assert lint.exit_code == 0 and "0 error(s)" in lint.stdout, lint.output
    spec = load_resolved(out).spec
    for key, value in _expected(FIXTURES / name).items():
        assert _resolved_value(spec, key) == value, key


def test_the_file_says_it_is_axolotl(tmp_path: Path) -> None:
    assert find_importer(FIXTURES / "lora-1b.yml", None) is IMPORTER
    marked = "# Axolotl config\nbase_model: m\n"
    assert IMPORTER.detect(tmp_path / "a.yml", marked)
    assert not IMPORTER.detect(tmp_path / "a.yml", "base_model: m\n# see axolotl\n")
    anyscale = Path(__file__).parent / "fixtures" / "anyscale" / "llama-3-70b-full.yaml"
    assert not IMPORTER.detect(anyscale, anyscale.read_text())


def test_a_missing_learning_rate_is_refused_as_axolotl_refuses_it(tmp_path: Path) -> None:
    source = tmp_path / "cfg.yml"
    source.write_text("base_model: m\ndatasets:\n  - path: d.jsonl\n")
    with pytest.raises(ImportFailed, match=r"cfg.yml.*: learning_rate: is required by Axolotl"):
        IMPORTER.convert(source)


def test_each_line_says_where_its_value_came_from() -> None:
    lines = _text("qlora-1b.yml").splitlines()
    assert "  lora_r: 32  # lora_r" in lines
    assert "  quantization: 4bit  # load_in_4bit" in lines
    assert "  evaluation_steps_interval: 0.25  # 1 / evals_per_epoch 4" in lines
    assert "#   datasets[0].type: alpaca  -- " + (
        "ftc trains on the data file's text or messages column; Axolotl's prompt formats have no equivalent"
    ) in lines


def test_axolotl_defaults_are_written_out_where_they_differ_from_ftc(tmp_path: Path) -> None:
    source = tmp_path / "minimal.yml"
    source.write_text("base_model: m\ndatasets:\n  - path: data.jsonl\n    type: completion\nlearning_rate: 1e-4\n")
    out = tmp_path / "spec.yaml"
    assert runner.invoke(app, ["import", str(source), "-o", str(out)]).exit_code == 0
    lines = out.read_text().splitlines()
    assert '  max_seq_length: 512  # Axolotl default sequence_len: 512' in lines
    assert '  batching_strategy: padding  # Axolotl default sample_packing: false' in lines
    assert '  lr_scheduler_type: cosine  # Axolotl default lr_scheduler: "cosine"' in lines
    assert "  evaluation_strategy: 'no'  # Axolotl default val_set_size: 0.0" in lines
    spec = load_resolved(out).spec
    resolved = (spec.data.max_seq_length, spec.checkpointing.output_dir, spec.lora.apply_lora)
    assert resolved == (512, "./model-out", False)
    assert spec.evaluation.evaluation_strategy == "no"


def test_the_same_file_gives_the_same_bytes() -> None:
    assert _text("mistral-qlora.yml") == _text("mistral-qlora.yml")


def _text(name: str) -> str:
    result = runner.invoke(app, ["import", str(FIXTURES / name)])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("adapter: qlora", "adapter: dora"), r"cfg.yml:\d+:1: adapter: 'dora' is refused by Axolotl; it accepts lora"),
        (("load_in_4bit: true", "load_in_4bit: false"), r"cfg.yml:\d+:1: adapter: 'qlora' is refused by Axolotl"),
        (("warmup_ratio: 0.1", "warmup_ratio: 0.1\nwarmup_steps: 10"), r"warmup_ratio: 0.1 is refused by Axolotl"),
        (("learning_rate: 0.0002", "learning_rate: fast"), r"cfg.yml:\d+:1: learning_rate: 'fast' is not a float"),
        (("lr_scheduler: cosine", "lr_scheduler: rex"), r"cfg.yml:\d+:1: lr_scheduler: 'rex' has no ftc equivalent"),
        (("num_epochs: 1", "num_epochs: 1.5"), r"cfg.yml:\d+:1: num_epochs: 1.5: ftc trains whole epochs"),
    ],
)
def test_bad_values_name_the_file_line_and_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    text = (FIXTURES / "qlora-1b.yml").read_text()
    assert edit[0] in text
    source = tmp_path / "cfg.yml"
    source.write_text(text.replace(edit[0], edit[1]))
    with pytest.raises(ImportFailed, match=message):
        IMPORTER.convert(source)


def test_quantizing_without_an_adapter_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "cfg.yml"
    source.write_text("base_model: m\ndatasets:\n  - path: d.jsonl\nlearning_rate: 1e-4\nload_in_8bit: true\n")
    with pytest.raises(ImportRefused, match=r"cfg.yml:5:1: load_in_8bit: True is refused by Axolotl") as caught:
        IMPORTER.convert(source)
    assert caught.value.flag == "load_in_8bit"


def test_lora_target_linear_is_listed_as_not_imported() -> None:
    imported = IMPORTER.convert(FIXTURES / "qlora-fsdp-70b.yaml")
    assert [item.name for item in imported.unmapped if item.name == "lora_target_linear"] == ["lora_target_linear"]
    assert not any(setting.key == ("lora", "target_modules") for setting in imported.settings)


def test_a_deepspeed_path_turns_deepspeed_on_with_that_file(tmp_path: Path) -> None:
    source = tmp_path / "cfg.yml"
    text = (FIXTURES / "lora-1b.yml").read_text()
    source.write_text(text + "deepspeed: deepspeed_configs/zero2.json\n")
    settings = {setting.key: setting for setting in IMPORTER.convert(source).settings}
    assert settings[("deepspeed", "apply_deepspeed")].value is True
    assert settings[("deepspeed", "deepspeed")].value == "deepspeed_configs/zero2.json"
    assert settings[("deepspeed", "deepspeed")].origin == "deepspeed"


def test_lora_settings_without_an_adapter_are_not_imported(tmp_path: Path) -> None:
    source = tmp_path / "cfg.yml"
    source.write_text((FIXTURES / "lora-1b.yml").read_text().replace("adapter: lora", "adapter:"))
    imported = IMPORTER.convert(source)
    assert not any(setting.key[0] == "lora" for setting in imported.settings)
    assert "lora_r" in {item.name for item in imported.unmapped}
