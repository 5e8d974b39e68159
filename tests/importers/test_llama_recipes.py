"""llama-recipes runs imported: the spec lints clean and trains with llama-recipes' effective values.

The expected values are computed here, apart from the importer: the train_config, fsdp_config and lora_config
dataclass defaults (fixtures/llama_recipes/SOURCES.md gives the commit) overridden by the command's flags, read
as fire reads them (`--name value`, or a bare `--name` meaning True).
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ftc.cli.app import app
from ftc.compiler.build import load_resolved
from ftc.importers import ImportFailed, ImportRefused, find_importer
from ftc.importers.llama_recipes import IMPORTER

FIXTURES = Path(__file__).parent / "fixtures" / "llama_recipes"
RUNS = ["multigpu-fsdp-lora.sh", "singlegpu-quantized-lora.sh", "multi_node.slurm", "train_config.yaml"]
# What each run's launcher asks for, read by hand: (nodes, processes per node).
LAUNCHERS = {
    "multigpu-fsdp-lora.sh": (1, 4),  # torchrun --nnodes 1 --nproc_per_node 4
    "singlegpu-quantized-lora.sh": (1, 1),  # python finetuning.py
    "multi_node.slurm": (2, 4),  # #SBATCH --nodes=2, srun torchrun --nproc_per_node 4
    "train_config.yaml": (1, 1),  # a config names no launcher
}
runner = CliRunner()

TRAIN_CONFIG: dict[str, Any] = {
    "model_name": "PATH/to/LLAMA/7B", "enable_fsdp": False, "low_cpu_fsdp": False, "run_validation": True,
    "batch_size_training": 4, "batching_strategy": "packing", "context_length": 4096,
    "gradient_accumulation_steps": 1, "gradient_clipping": False, "gradient_clipping_threshold": 1.0,
    "num_epochs": 3, "num_workers_dataloader": 1, "lr": 1e-4, "weight_decay": 0.0, "gamma": 0.85, "seed": 42,
    "use_fp16": False, "mixed_precision": True, "val_batch_size": 1, "peft_method": "lora", "use_peft": False,
    "quantization": None, "save_model": True, "use_fast_kernels": False,
}
FSDP_CONFIG: dict[str, Any] = {
    "sharding_strategy": "FULL_SHARD", "checkpoint_type": "SHARDED_STATE_DICT",
    "fsdp_activation_checkpointing": True, "fsdp_cpu_offload": False, "pure_bf16": False, "optimizer": "AdamW",
}
LORA_CONFIG: dict[str, Any] = {"r": 8, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.05}
# llama-recipes name -> the resolved ftc parameter that must hold its effective value.
KEYS = {
    "model_name": "model.model_selector_output", "enable_fsdp": "fsdp.enable_fsdp",
    "low_cpu_fsdp": "fsdp.low_cpu_fsdp", "run_validation": "evaluation.run_validation",
    "batch_size_training": "training.per_device_train_batch_size", "batching_strategy": "data.batching_strategy",
    "context_length": "data.max_seq_length", "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "gradient_clipping": "training.gradient_clipping", "gradient_clipping_threshold": "training.max_grad_norm",
    "num_epochs": "training.num_train_epochs", "num_workers_dataloader": "training.dataloader_num_workers",
    "lr": "optimizer.learning_rate", "weight_decay": "optimizer.weight_decay", "gamma": "optimizer.gamma",
    "seed": "training.seed", "val_batch_size": "training.per_device_eval_batch_size",
    "use_peft": "lora.apply_lora", "quantization": "precision.quantization", "save_model": "checkpointing.save_model",
    "use_fast_kernels": "precision.use_fast_kernels", "sharding_strategy": "fsdp.sharding_strategy",
    "checkpoint_type": "fsdp.checkpoint_type", "fsdp_activation_checkpointing": "fsdp.fsdp_activation_checkpointing",
    "fsdp_cpu_offload": "fsdp.fsdp_cpu_offload", "pure_bf16": "precision.pure_bf16",
    "optimizer": "fsdp.fsdp_optimizer",
}
LORA_KEYS = {"r": "lora.lora_r", "lora_alpha": "lora.lora_alpha", "target_modules": "lora.target_modules",
             "lora_dropout": "lora.lora_dropout", "peft_method": "lora.peft_method"}


def _fire(words: list[str]) -> dict[str, Any]:
    """The flags after the finetuning script, as fire passes them to main()."""
    script = next(i for i, word in enumerate(words) if word.endswith("finetuning.py"))
    flags: dict[str, Any] = {}
    rest = words[script + 1:]
    while rest:
        name = rest.pop(0).removeprefix("--").split(".")[-1]
        if rest and not rest[0].startswith("--"):
            text = rest.pop(0)
            try:
                flags[name] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                flags[name] = text
        else:
            flags[name] = True
    return flags


def _given(source: Path) -> dict[str, Any]:
    if source.suffix == ".yaml":
        data = yaml.safe_load(source.read_text())
        nested = {k: v for section in ("fsdp_config", "lora_config") for k, v in data.pop(section, {}).items()}
        return {**data, **nested}
    return _fire(shlex.split(source.read_text()))


def _expected(source: Path) -> dict[str, Any]:
    """ftc parameter -> llama-recipes' effective value for the run in `source`."""
    config = {**TRAIN_CONFIG, **FSDP_CONFIG, **_given(source)}
    expected = {ftc: config[name] for name, ftc in KEYS.items()}
    expected["optimizer.lr_scheduler_type"] = "step"  # StepLR(step_size=1, gamma=train_config.gamma)
    expected["precision.precision"] = "fp16" if config["use_fp16"] else "bf16" if config["mixed_precision"] else "32"
    if config["use_peft"]:
        expected["lora.merge_lora_weights"] = False  # llama-recipes saves the adapter (model.save_pretrained)
        lora = {**LORA_CONFIG, **config}
        expected |= {ftc: lora[name] for name, ftc in LORA_KEYS.items()}
    return expected


def _resolved_value(spec: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        spec = getattr(spec, part)
    return spec


@pytest.mark.parametrize("name", RUNS)
def test_the_imported_spec_trains_with_llama_recipes_effective_values(name: str, tmp_path: Path) -> None:
    out = tmp_path / "spec.yaml"
    result = runner.invoke(app, ["import", str(FIXTURES / name), "-o", str(out)])
    assert result.exit_code == 0, result.output
    lint = runner.invoke(app, ["lint", str(out)])
    assert lint.exit_code == 0 and "0 error(s)" in lint.stdout, lint.output
    spec = load_resolved(out).spec
    for key, value in _expected(FIXTURES / name).items():
        assert _resolved_value(spec, key) == value, key
    assert (spec.resources.nodes, spec.resources.processes_per_node) == LAUNCHERS[name]


def test_launcher_flags_become_resources() -> None:
    text = _text("multigpu-fsdp-lora.sh")
    assert "  nodes: 1  # --nnodes 1" in text
    assert "  processes_per_node: 4  # --nproc_per_node 4" in text
    single = _text("singlegpu-quantized-lora.sh")
    assert "  processes_per_node: 1  # python runs one process" in single
    assert "    FSDP_CPU_RAM_EFFICIENT_LOADING: '1'  # FSDP_CPU_RAM_EFFICIENT_LOADING=1 before the command" in single


def test_each_default_that_differs_from_ftc_is_written_out() -> None:
    lines = _text("multigpu-fsdp-lora.sh").splitlines()
    for line in [
        "  max_seq_length: 4096  # llama-recipes default context_length: 4096",
        "  gradient_clipping: false  # llama-recipes default gradient_clipping: false",
        "  mixed_precision: true  # llama-recipes default mixed_precision: true",
        "  lr_scheduler_type: step  # llama-recipes decays the learning rate by gamma after each epoch (StepLR)",
        "  merge_lora_weights: false  # llama-recipes saves the PEFT adapter, not a merged model",
        "  enable_fsdp: true  # --enable_fsdp",
        "#   dataset: samsum_dataset  -- llama-recipes default; a llama-recipes dataset recipe; ftc reads data "
        "files: set data.train_file_path",
    ]:
        assert line in lines


def test_the_same_file_gives_the_same_bytes() -> None:
    assert _text("train_config.yaml") == _text("train_config.yaml")


def _text(name: str) -> str:
    result = runner.invoke(app, ["import", str(FIXTURES / name)])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fsdp-qlora-int4.sh", r"fsdp-qlora-int4.sh:1:125: --quantization: 'int4' is refused by llama-recipes; "
         r"it accepts 4bit, 8bit"),
        ("hsdp-placeholder.sh", r"hsdp-placeholder.sh:1:263: --sharding_group_size: 'n' is refused by llama-recipes; "
         r"it accepts an integer"),
    ],
)
def test_published_placeholders_are_refused_naming_the_flag(name: str, message: str) -> None:
    with pytest.raises(ImportRefused, match=message):
        IMPORTER.convert(FIXTURES / name)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--peft_method prefix", r"run.sh:3:3: --peft_method: 'prefix' is refused by llama-recipes; it accepts lora"),
        ("--enable_fsdp --quantization 8bit", r"--quantization: '8bit' is refused .* 4bit \(with --enable_fsdp\)"),
        ("--batching_strategy concat", r"--batching_strategy: 'concat' is refused .* accepts packing, padding"),
        ("--use_peft false", r"--use_peft: 'false' is refused by llama-recipes; it accepts True"),
    ],
)
def test_values_llama_recipes_rejects_are_refused(tmp_path: Path, flags: str, message: str) -> None:
    source = tmp_path / "run.sh"
    source.write_text(f"torchrun --nnodes 1 --nproc_per_node 2 \\\n  finetuning.py --use_fast_kernels \\\n  {flags}\n")
    with pytest.raises(ImportRefused, match=message):
        IMPORTER.convert(source)


def test_srun_continued_lines_prefixes_and_module_launch(tmp_path: Path) -> None:
    source = tmp_path / "job.sh"
    source.write_text(
        "#!/bin/bash\n# a comment naming finetuning\nexport NCCL_DEBUG=INFO LOGLEVEL=INFO\nNCCL_DEBUG=WARN srun -N 2 --ntasks 2 torchrun \\\n"
        "  --nproc_per_node 8 --rdzv_backend c10d -m llama_recipes.finetuning \\\n"
        "  --lr=3e-5 --quantization --fsdp_config.pure_bf16 --noise 1\n"
    )
    imported = IMPORTER.convert(source)
    settings = {s.key: (s.value, s.origin) for s in imported.settings}
    assert settings[("resources", "nodes")] == (2, "srun -N 2")
    assert settings[("resources", "processes_per_node")] == (8, "--nproc_per_node 8")
    assert settings[("optimizer", "learning_rate")] == (3e-5, "--lr 3e-5")
    assert settings[("precision", "quantization")][0] == "8bit"  # a bare --quantization is 8bit
    assert settings[("precision", "pure_bf16")] == (True, "--fsdp_config.pure_bf16")
    assert settings[("env", "vars", "NCCL_DEBUG")][0] == "WARN"  # the prefix, set after the export
    assert settings[("env", "vars", "LOGLEVEL")] == ("INFO", "LOGLEVEL=INFO before the command")
    assert [item.name for item in imported.unmapped] == ["--noise 1", "dataset"]


def test_a_slurm_script_gives_its_exports_and_nodes() -> None:
    lines = _text("multi_node.slurm").splitlines()
    assert "  nodes: 2  # #SBATCH --nodes=2" in lines
    assert "  enabled: [slurm]  # srun: the command runs in a SLURM job" in lines
    # exported twice, each time onto the value before: the shell's value, not the last line's text
    assert "    LD_LIBRARY_PATH: /usr/local/lib/:/opt/amazon/efa/lib:$LD_LIBRARY_PATH  # LD_LIBRARY_PATH=/usr/local/lib/" \
        ":$LD_LIBRARY_PATH before the command" in lines


def test_a_file_without_one_finetuning_command_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "two.sh"
    source.write_text("torchrun finetuning.py --lr 1\npython finetuning.py --lr 2\n")
    with pytest.raises(ImportFailed, match="holds 2 llama-recipes finetuning commands"):
        IMPORTER.convert(source)


@pytest.mark.parametrize("name", RUNS)
def test_the_file_says_it_is_llama_recipes(name: str) -> None:
    path = FIXTURES / name
    assert find_importer(path, None) is IMPORTER


def test_a_train_config_value_is_refused_at_its_line(tmp_path: Path) -> None:
    source = tmp_path / "train.yaml"
    source.write_text("use_peft: true\nfsdp_config:\n  sharding_strategy: FULL\n")
    with pytest.raises(ImportRefused, match=r"train.yaml:3:3: fsdp_config.sharding_strategy: 'FULL' is refused"):
        IMPORTER.convert(source)


def test_a_json_train_config_is_read_like_the_yaml(tmp_path: Path) -> None:
    source = tmp_path / "train.json"
    source.write_text('{"use_peft": true, "lr": 0.0003, "lora_config": {"r": 4}}')
    settings = {s.key: s.value for s in IMPORTER.convert(source).settings}
    assert settings[("optimizer", "learning_rate")] == 0.0003
    assert settings[("lora", "lora_r")] == 4
    assert settings[("lora", "lora_alpha")] == 32  # lora_config default
    assert find_importer(source, None) is IMPORTER
