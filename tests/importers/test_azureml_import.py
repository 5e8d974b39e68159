"""Azure ML finetune pipeline jobs imported: the spec lints clean and trains with the job's effective values.

The expected values are computed here, apart from the importer: the published pipeline component's input defaults
(fixtures/azureml/components, read with yaml.safe_load) overridden by the job's inputs, `${{parent.inputs.X}}` read
from the pipeline's `inputs`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ftc.cli.app import app
from ftc.compiler.build import load_resolved
from ftc.importers import ImportFailed, find_importer
from ftc.importers.azureml import IMPORTER

FIXTURES = Path(__file__).parent / "fixtures" / "azureml"
PIPELINES = ["text-generation-pipeline.yml", "news-summary-pipeline.yml"]
runner = CliRunner()

# Component input -> the resolved ftc parameter that must hold its effective value, for every input of the
# pipeline components that ftc runs (the other steps' inputs, ORT and the prompt/completion split are listed as
# not imported).
INPUTS = {
    "num_nodes_finetune": "resources.nodes", "number_of_gpu_to_use_finetuning": "resources.processes_per_node",
    "huggingface_id": "model.model_selector_output", "pytorch_model_path": "model.model_selector_output",
    "mlflow_model_path": "model.model_selector_output", "text_key": "data.text_key",
    "document_key": "data.source_key", "summary_key": "data.target_key", "batch_size": "data.preprocess_batch_size",
    "pad_to_max_length": "data.pad_to_max_length", "max_seq_length": "data.max_seq_length",
    "train_file_path": "data.train_file_path", "validation_file_path": "data.validation_file_path",
    "test_file_path": "data.test_file_path", "apply_lora": "lora.apply_lora",
    "merge_lora_weights": "lora.merge_lora_weights", "lora_alpha": "lora.lora_alpha", "lora_r": "lora.lora_r",
    "lora_dropout": "lora.lora_dropout", "num_train_epochs": "training.num_train_epochs",
    "max_steps": "training.max_steps", "per_device_train_batch_size": "training.per_device_train_batch_size",
    "per_device_eval_batch_size": "training.per_device_eval_batch_size",
    "auto_find_batch_size": "training.auto_find_batch_size", "optim": "optimizer.optim",
    "learning_rate": "optimizer.learning_rate", "warmup_steps": "optimizer.warmup_steps",
    "weight_decay": "optimizer.weight_decay", "adam_beta1": "optimizer.adam_beta1",
    "adam_beta2": "optimizer.adam_beta2", "adam_epsilon": "optimizer.adam_epsilon",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "eval_accumulation_steps": "evaluation.eval_accumulation_steps", "lr_scheduler_type": "optimizer.lr_scheduler_type",
    "precision": "precision.precision", "seed": "training.seed",
    "enable_full_determinism": "training.enable_full_determinism",
    "dataloader_num_workers": "training.dataloader_num_workers", "ignore_mismatched_sizes": "model.ignore_mismatched_sizes",
    "max_grad_norm": "training.max_grad_norm", "evaluation_strategy": "evaluation.evaluation_strategy",
    "evaluation_steps_interval": "evaluation.evaluation_steps_interval", "eval_steps": "evaluation.eval_steps",
    "logging_strategy": "tracking.logging_strategy", "logging_steps": "tracking.logging_steps",
    "metric_for_best_model": "evaluation.metric_for_best_model",
    "resume_from_checkpoint": "checkpointing.resume_from_checkpoint", "save_total_limit": "checkpointing.save_total_limit",
    "apply_early_stopping": "early_stopping.apply_early_stopping",
    "early_stopping_patience": "early_stopping.early_stopping_patience",
    "early_stopping_threshold": "early_stopping.early_stopping_threshold", "apply_deepspeed": "deepspeed.apply_deepspeed",
    "deepspeed_stage": "deepspeed.deepspeed_stage", "compute_finetune": "targets.azureml.compute",
}
# Placement defaults ftc does not copy: serverless is ftc's own default, and ftc sizes the serverless VM from the
# GPUs asked for (the component's Standard_nc24rs_v3 is a retired V100 size). A job that sets them is compared.
PLACEMENT_DEFAULTS = ("compute_finetune", "instance_type_finetune")


def _component_defaults(job: dict[str, Any]) -> dict[str, Any]:
    """The input defaults of the pipeline component the job's step calls (its published spec.yaml)."""
    (step,) = job["jobs"].values()
    name = step["component"].split("/components/")[1].split("/")[0]
    component = yaml.safe_load((FIXTURES / "components" / f"{name}.yaml").read_text())
    return {
        key: spec["default"]
        for key, spec in component["inputs"].items()
        if isinstance(spec, dict) and "default" in spec and key not in PLACEMENT_DEFAULTS
    }


def _effective_inputs(source: Path) -> dict[str, Any]:
    """The finetune step's inputs as Azure ML runs it: parent inputs resolved, data/model inputs as their path."""
    job = yaml.safe_load(source.read_text())
    (step,) = job["jobs"].values()
    values = _component_defaults(job)
    for name, value in step["inputs"].items():
        if isinstance(value, str) and value.strip().startswith("${{parent.inputs."):
            value = job["inputs"][value.strip()[len("${{parent.inputs."):-2]]
        values[name] = _path(source, value["path"]) if isinstance(value, dict) else value
    return values


def _path(source: Path, path: str) -> str:
    """Azure ML uploads a local relative path from the pipeline file's folder; a URI is used as it is."""
    return path if path.startswith("azureml:") else os.path.normpath(source.resolve().parent / path)


def _as_ftc(name: str, value: Any) -> Any:
    """A component input as ftc's resolved spec holds it: "true"/"false" as booleans, numbers as numbers."""
    if name == "eval_accumulation_steps" and value == -1:
        return None  # the component: "will be passed as None if set to -1"
    if name in ("precision", "deepspeed_stage"):
        return str(value)  # enums of numbers, kept as text by both
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _resolved_value(spec: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        spec = getattr(spec, part)
    return spec


@pytest.mark.parametrize("name", PIPELINES)
def test_the_imported_spec_trains_with_the_pipeline_effective_values(name: str, tmp_path: Path) -> None:
    out = tmp_path / "spec.yaml"
    result = runner.invoke(app, ["import", str(FIXTURES / name), "-o", str(out)])
    assert result.exit_code == 0, result.output
    lint = runner.invoke(app, ["lint", str(out), "-t", "azureml"])
    assert lint.exit_code == 0 and "0 error(s)" in lint.stdout, lint.output
    resolved = load_resolved(out).spec
    for component_input, value in _effective_inputs(FIXTURES / name).items():
        if component_input in INPUTS:
            actual = _resolved_value(resolved, INPUTS[component_input])
            assert actual == _as_ftc(component_input, value), component_input
    if resolved.task == "causal_lm":
        assert resolved.data.batching_strategy == "padding"  # the components pad; ftc's causal_lm default packs
    assert resolved.ort.apply_ort is False  # ftc cannot run ORT; listed as not imported


def test_the_file_says_it_is_an_azure_ml_pipeline() -> None:
    assert find_importer(FIXTURES / PIPELINES[0], None) is IMPORTER


def test_settings_ftc_lacks_are_listed_with_their_reason_and_the_output_is_stable() -> None:
    first = runner.invoke(app, ["import", str(FIXTURES / PIPELINES[0])])
    assert first.exit_code == 0, first.output
    assert first.stdout == runner.invoke(app, ["import", str(FIXTURES / PIPELINES[0])]).stdout
    lines = first.stdout.splitlines()
    assert "optimizer:" in lines and "  learning_rate: 2.0e-05  # inputs.learning_rate" in lines
    assert any(line.startswith("#   ground_truth_key: summary  -- ") for line in lines)
    assert any(line.startswith("#   apply_ort: 'true'  -- ftc cannot run ONNX Runtime") for line in lines)


def test_a_component_default_that_differs_from_ftc_is_written_out(tmp_path: Path) -> None:
    source = tmp_path / "job.yml"
    precision_input = "      precision: ${{parent.inputs.precision}}\n"
    source.write_text((FIXTURES / PIPELINES[0]).read_text().replace(precision_input, ""))
    settings = {s.key: s for s in IMPORTER.convert(source).settings}
    assert settings[("precision", "precision")].value == "32"
    assert settings[("precision", "precision")].origin == "Azure ML component default precision: 32"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("${{parent.inputs.num_train_epochs}}", "${{parent.inputs.epochs}}",
         r"job.yml:\d+:7: num_train_epochs: names parent input 'epochs', which `inputs` lacks"),
        ("components/text_generation_pipeline/", "components/image_classification_pipeline/",
         r"job.yml:\d+:1: jobs: no step calls a finetune component"),
        ("      text_key: ${{parent.inputs.text_key}}\n", "      text_key: x\n      huggingface_id: gpt2\n",
         r"job.yml:\d+:7: jobs.text_generation_pipeline.inputs.huggingface_id: gives model.model_selector_output "
         r"again, after inputs.mlflow_model_path"),
        ("  train_file_path: \n    type: uri_file\n    path:", "  train_file_path: \n    type: uri_file\n    where:",
         r"job.yml:\d+:3: inputs.train_file_path: an input of type uri_file/uri_folder/mltable needs a path"),
    ],
)
def test_a_bad_file_names_the_file_line_and_key(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = (FIXTURES / PIPELINES[0]).read_text()
    assert old in text
    source = tmp_path / "job.yml"
    source.write_text(text.replace(old, new))
    with pytest.raises(ImportFailed, match=message):
        IMPORTER.convert(source)
