"""Azure ML pipeline job YAML calling the finetune pipeline or command components, as an ftc spec.

The components' input names are ftc's names (or their aliases, ftc/spec/sections.py); their defaults are those of
the published pipeline components (COMPONENT_DEFAULTS), written out where ftc's default for the task differs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ftc.importers.base import Imported, ImportFailed, Key, ftc_defaults, read_yaml_source
from ftc.spec.keys import leaf_index
from ftc.spec.loader import SourceDoc

TOOL = "Azure ML"
DEFAULT = "Azure ML component default"
# Azure ML task (component name prefix) -> ftc task.
TASKS = {
    "text_generation": "causal_lm",
    "chat_completion": "causal_lm",
    "text_classification": "text_classification",
    "question_answering": "question_answering",
    "summarization": "summarization",
    "translation": "translation",
}
COMPONENT = re.compile(r"(?:^|[/:])(?P<task>" + "|".join(TASKS) + r")_(?:pipeline|finetune)(?:$|[/:@])")
# The finetune pipeline components' input defaults (azureml-assets 4b41f8cc,
# assets/training/finetune_acft_hf_nlp/components/pipeline_components/<task>/spec.yaml, text_generation_pipeline
# 0.0.80; the other tasks' differ only as in FAMILY_DEFAULTS), as the component writes them. Where one differs from
# ftc's default for the task, the import writes it out. The step placement inputs (compute_*, instance_type_*,
# shm_size_finetune) are left out: ftc runs on serverless compute by default and sizes the VM from the GPUs asked
# for (the component's default VM, Standard_nc24rs_v3, is a retired V100 size).
COMPONENT_DEFAULTS: dict[str, Any] = {
    "num_nodes_finetune": 1, "number_of_gpu_to_use_finetuning": 1, "batch_size": 1000, "pad_to_max_length": "false",
    "max_seq_length": -1, "apply_lora": "false", "merge_lora_weights": "true", "lora_alpha": 128, "lora_r": 8,
    "lora_dropout": 0.0, "num_train_epochs": 1, "max_steps": -1, "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1, "auto_find_batch_size": "false", "optim": "adamw_torch", "learning_rate": 2e-05,
    "warmup_steps": 0, "weight_decay": 0.0, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": "1e-8",
    "gradient_accumulation_steps": 1, "eval_accumulation_steps": -1, "lr_scheduler_type": "linear", "precision": "32",
    "seed": 42, "enable_full_determinism": "false", "dataloader_num_workers": 0, "ignore_mismatched_sizes": "true",
    "max_grad_norm": 1.0, "evaluation_strategy": "epoch", "evaluation_steps_interval": 0.0, "eval_steps": 500,
    "logging_strategy": "steps", "logging_steps": 10, "metric_for_best_model": "loss",
    "resume_from_checkpoint": "false", "save_total_limit": -1, "apply_early_stopping": "false", "early_stopping_patience": 1,
    "early_stopping_threshold": 0.0, "apply_deepspeed": "false", "deepspeed_stage": "2", "apply_ort": "false",
}
# Where a task's pipeline component differs from text_generation's.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "chat_completion": {"ignore_mismatched_sizes": "false"},
    "question_answering": {"doc_stride": 128, "max_answer_length_in_tokens": 30, "n_best_size": 20},
}
# How the components train where ftc's default for the task differs, though no input sets it: the ftc key, value
# and why. They pad each example (HF Trainer's collator); ftc's causal_lm default packs.
BEHAVIOUR: dict[Key, tuple[Any, str]] = {
    ("data", "batching_strategy"): ("padding", "Azure ML components pad each example; they never pack"),
}
# Component values that ftc writes another way: eval_accumulation_steps -1 "will be passed as None".
SAME_AS = {("eval_accumulation_steps", -1): None}
# The components' inputs without a default (data, model and the task's columns), for `ftc docs --source azureml`.
INPUTS_WITHOUT_DEFAULT = (
    "huggingface_id", "pytorch_model_path", "mlflow_model_path", "train_file_path", "validation_file_path",
    "test_file_path", "text_key", "deepspeed",
)
# Inputs whose ftc key is not the component input's own name.
RENAMED: dict[str, Key] = {
    "mlflow_model_path": ("model", "model_selector_output"),
    "compute_finetune": ("targets", "azureml", "compute"),
    "instance_type_finetune": ("targets", "azureml", "instance_type"),
    "document_key": ("data", "source_key"),  # summarization pipeline: the column summarized
    "summary_key": ("data", "target_key"),  # summarization pipeline: the column of reference summaries
}
OTHER_STEPS = (
    "ftc runs the finetune step only; the pipeline's other steps (model import, preprocess, evaluation) are not run"
)
NO_EQUIVALENT = {
    "compute_model_import": OTHER_STEPS,
    "compute_preprocess": OTHER_STEPS,
    "compute_model_evaluation": OTHER_STEPS,
    "instance_type_model_import": OTHER_STEPS,
    "instance_type_preprocess": OTHER_STEPS,
    "instance_type_model_evaluation": OTHER_STEPS,
    "evaluation_config": OTHER_STEPS,
    "apply_ort": "ftc cannot run ONNX Runtime training (FTC107); ORT only speeds training up, the result is the same",
    "ground_truth_key": (
        "ftc's causal_lm trains on text_key only; the prompt/completion split of ground_truth_key is not kept"
    ),
}
PARENT = re.compile(r"^\$\{\{\s*parent\.inputs\.(?P<name>[A-Za-z0-9_]+)\s*\}\}$")
URI = re.compile(r"^(azureml:|[A-Za-z][A-Za-z0-9+.-]*://)")
BOOLEAN_TEXT = {"true": True, "false": False}
NUMBER = re.compile(r"^-?[0-9.]+(e-?[0-9]+)?$", re.IGNORECASE)
TEXT_NUMBERS = ("precision", "deepspeed_stage")  # enums of numbers written as text, as ftc's schema keeps them


class AzuremlImporter:
    """Azure ML pipeline job -> ftc settings."""

    name = "azureml"

    def detect(self, path: Path, text: str) -> bool:
        """A pipeline job (its $schema or `type: pipeline`) with a step calling a finetune component."""
        pipeline = "pipelineJob.schema" in text or re.search(r"^type\s*:\s*pipeline\s*$", text, re.MULTILINE)
        return bool(pipeline) and COMPONENT.search(text) is not None

    def convert(self, path: Path) -> Imported:
        """The finetune step's inputs (parent inputs resolved), the component defaults where ftc's differ."""
        doc = read_yaml_source(path)
        out = Imported(str(path), TOOL)
        step, task = _finetune_step(doc)
        out.set(("task",), TASKS[task], f"component {task}")
        out.set(("targets", "enabled"), ["azureml"], "an Azure ML pipeline job")
        inputs = _mapping(doc, ("jobs", step, "inputs"), required=False)
        for name, value in inputs.items():
            where, resolved = _resolve(doc, step, name, value)
            _convert_input(doc, out, where, name, resolved)
        for name, value in component_defaults(task).items():
            if name not in inputs and name not in NO_EQUIVALENT and _differs(name, value, TASKS[task]):
                out.set(_required_key(name), ftc_value(name, value), f"{DEFAULT} {name}: {value}")
        for key, (value, why) in BEHAVIOUR.items():
            if ftc_defaults(TASKS[task])[".".join(key)] != value and all(s.key != key for s in out.settings):
                out.set(key, value, why)
        return out


def component_defaults(family: str) -> dict[str, Any]:
    """The input defaults of the `family` finetune pipeline component (text_generation, ...)."""
    return {**COMPONENT_DEFAULTS, **FAMILY_DEFAULTS.get(family, {})}


def ftc_value(name: str, value: Any) -> Any:
    """A component input value as ftc takes it: "true"/"false" as booleans, a number written as text as a number."""
    if (name, value) in SAME_AS:
        return SAME_AS[name, value]
    if isinstance(value, str) and value.lower() in BOOLEAN_TEXT:
        return BOOLEAN_TEXT[value.lower()]
    if isinstance(value, str) and NUMBER.match(value) and name not in TEXT_NUMBERS:
        return float(value) if any(c in value for c in ".eE") else int(value)
    return value


def doc_names() -> dict[str, str]:
    """Every input of the finetune pipeline components that ftc runs -> its ftc key (`ftc docs --source`)."""
    names = [*COMPONENT_DEFAULTS, *(n for d in FAMILY_DEFAULTS.values() for n in d), *RENAMED, *INPUTS_WITHOUT_DEFAULT]
    return {name: ".".join(_required_key(name)) for name in names if name not in NO_EQUIVALENT}


def doc_defaults() -> dict[str, Any]:
    """The text_generation component's defaults as ftc takes them (`ftc docs --source` lists those that differ)."""
    return {
        name: ftc_value(name, value) for name, value in component_defaults("text_generation").items()
        if name not in NO_EQUIVALENT
    }


def _differs(name: str, value: Any, task: str) -> bool:
    """Whether the component default differs from ftc's default for `task`."""
    return ftc_value(name, value) != ftc_defaults(task)[".".join(_required_key(name))]


def _required_key(name: str) -> Key:
    key = _key(name)
    if key is None:
        raise KeyError(f"component input {name} has no ftc key; list it in NO_EQUIVALENT")
    return key


def _finetune_step(doc: SourceDoc) -> tuple[str, str]:
    """The one step of `jobs` whose component is a finetune pipeline or command component, and its task."""
    jobs = _mapping(doc, ("jobs",), required=True)
    found: list[tuple[str, str]] = []
    for step, job in jobs.items():
        component = job.get("component") if isinstance(job, dict) else None
        match = COMPONENT.search(component) if isinstance(component, str) else None
        if match:
            found.append((str(step), match["task"]))
    if len(found) != 1:
        problem = "no step calls" if not found else f"{len(found)} steps call"
        raise ImportFailed(doc.locate(("jobs",)), "jobs", f"{problem} a finetune component ({', '.join(TASKS)})")
    return found[0]


def _mapping(doc: SourceDoc, where: Key, required: bool) -> dict[str, Any]:
    """The mapping at `where`; ImportFailed when it is not one (or missing while `required`)."""
    value: Any = doc.data
    for part in where:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ImportFailed(doc.locate(where), ".".join(where), "must be a mapping")
    return value


def _resolve(doc: SourceDoc, step: str, name: str, value: Any) -> tuple[Key, Any]:
    """A step input's value and where it is written: `${{parent.inputs.X}}` is the pipeline's input X."""
    where: Key = ("jobs", step, "inputs", name)
    match = PARENT.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        return where, value
    parent = _mapping(doc, ("inputs",), required=False)
    if match["name"] not in parent:
        raise ImportFailed(doc.locate(where), name, f"names parent input {match['name']!r}, which `inputs` lacks")
    return ("inputs", match["name"]), parent[match["name"]]


def _convert_input(doc: SourceDoc, out: Imported, where: Key, name: str, value: Any) -> None:
    """One component input as its ftc setting; a data or model input ({type, path}) gives its path."""
    origin = ".".join(where)
    if name in NO_EQUIVALENT:
        out.skip(name, value, NO_EQUIVALENT[name])
        return
    if isinstance(value, dict):
        path = value.get("path")
        if not isinstance(path, str) or not path:
            raise ImportFailed(doc.locate(where), origin, "an input of type uri_file/uri_folder/mltable needs a path")
        value = _local_path(doc, path)
    else:
        value = ftc_value(name, value)
    key = _key(name)
    if key is None:
        out.skip(name, value, "no ftc equivalent")
        return
    earlier = next((s.origin for s in out.settings if s.key == key), None)
    if earlier is not None:
        raise ImportFailed(doc.locate(where), origin, f"gives {'.'.join(key)} again, after {earlier}")
    out.set(key, value, origin)


def _local_path(doc: SourceDoc, path: str) -> str:
    """A data or model input's path: Azure ML uploads a relative local path from the pipeline file's folder."""
    if URI.match(path) or Path(path).is_absolute():
        return path
    return os.path.normpath(doc.base_dir / path)


def _key(name: str) -> Key | None:
    """The ftc key of the component input `name`, or None when ftc has none."""
    return RENAMED.get(name) or leaf_index().get(name)


IMPORTER = AzuremlImporter()
