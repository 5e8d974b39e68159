"""Azure ML pipeline job YAML calling the finetune pipeline or command components, as an ftc spec.

The components' input names are ftc's names (or their aliases, ftc/spec/sections.py); their defaults are the
component docs' tables (/work/shared/seeds/001, 002; /work/shared/reference/params-inventory.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ftc.importers.base import Imported, ImportFailed, Key, read_yaml_source
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
# The finetune components' defaults (seed 001's tables) that differ from ftc's for the task: written out when
# the job leaves them out. ftc's causal_lm defaults follow llama-recipes and LLMForge, Azure ML's do not.
DEFAULTS: dict[str, Any] = {"precision": "32"}
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "causal_lm": {
        "num_train_epochs": 1,
        "per_device_train_batch_size": 1,
        "optim": "adamw_hf",
        "learning_rate": 2e-05,
        "lora_alpha": 128,
        "lora_dropout": 0.0,
        "batching_strategy": "padding",  # the components pad each example (HF Trainer); they never pack
    },
}
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
        for name, value in {**DEFAULTS, **TASK_DEFAULTS.get(TASKS[task], {})}.items():
            if name not in inputs:
                out.set(leaf_index()[name], value, f"{DEFAULT} {name}: {value}")
        return out


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
    elif isinstance(value, str) and value.lower() in BOOLEAN_TEXT:
        value = BOOLEAN_TEXT[value.lower()]
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
