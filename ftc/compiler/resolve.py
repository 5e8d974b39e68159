"""Resolve a validated spec: task defaults, the other systems' spellings, derived values, provenance.

The result is what every target's runtime reads (`ftc.resolved.json`) and what `ftc explain` shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ftc import __version__
from ftc.errors import Location
from ftc.spec.fields import meta_of, names_of
from ftc.spec.model import SECTION_ALIASES
from ftc.spec.loader import SourceDoc
from ftc.spec.model import SpecBase
from ftc.spec.sections import LLM_TASKS, LOWER_IS_BETTER

CONFIG_NAME = "ftc.resolved.json"
# What a default means beyond its value, shown by `ftc explain` next to its source.
DEFAULT_NOTES = {"precision.precision": "bf16 on GPUs that have it, else fp16; 32-bit on CPU; decided at run time"}
TASK_DEFAULT_NOTES = {
    "data.max_seq_length": "or the model's maximum when smaller",
    "optimizer.optim": "adamw_torch_fused on CUDA GPUs",
}


@dataclass(frozen=True)
class Resolved:
    """A spec with every value decided, where each came from, and the values derived from them."""

    spec: SpecBase
    doc: SourceDoc
    sources: dict[str, str] = field(default_factory=dict)
    derived: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.derived["name"])

    def runtime_config(self, base_dir: str) -> dict[str, Any]:
        """The runtime's configuration: every parameter (targets excluded) plus derived values.

        `base_dir` is the spec's folder relative to the folder holding the config, so relative
        data and model paths resolve the same way wherever the build is moved with its spec.
        """
        params = self.spec.model_dump(mode="json", exclude={"targets", "lint"})
        return {
            "ftc": {"version": __version__, "spec": self.doc.file.rsplit("/", 1)[-1], "spec_sha256": self.doc.sha256},
            "base_dir": base_dir,
            "derived": self.derived,
            **params,
        }


def resolve(spec: SpecBase, doc: SourceDoc) -> Resolved:
    """Apply task defaults and cross-system spellings, and derive the values targets need."""
    sources: dict[str, str] = {}
    _apply_task_defaults(spec, doc, sources)
    _apply_llama_recipes_precision(spec, sources)
    llm_derived = _apply_llm_defaults(spec, sources)
    res, ev = spec.resources, spec.evaluation
    if res.num_devices is not None and "processes_per_node" not in res.model_fields_set:
        res.processes_per_node = res.num_devices // res.nodes
        sources["resources.processes_per_node"] = "derived from resources.num_devices"
    if not ev.run_validation and ev.evaluation_strategy != "no":
        ev.evaluation_strategy = "no"
        sources["evaluation.evaluation_strategy"] = "derived from evaluation.run_validation: false"
    if spec.precision.quantization and "apply_lora" not in spec.lora.model_fields_set:
        spec.lora.apply_lora = True  # QLoRA: a quantized model trains through an adapter only
        sources["lora.apply_lora"] = "derived from precision.quantization"
    world_size = res.nodes * res.processes_per_node
    tr = spec.training
    derived = {
        "name": spec.name or f"{spec.task}_finetune",
        "world_size": world_size,
        "effective_train_batch_size": tr.per_device_train_batch_size * world_size * tr.gradient_accumulation_steps,
        "epochs_from_min_update_steps": tr.min_update_steps is not None
        and "num_train_epochs" not in tr.model_fields_set,
        "metric_greater_is_better": ev.metric_for_best_model not in LOWER_IS_BETTER,
        **llm_derived,
    }
    return Resolved(spec=spec, doc=doc, sources=sources, derived=derived)


def epochs_for_min_update_steps(min_update_steps: int, steps_per_epoch: int) -> int:
    """Anyscale's rule: enough epochs to make at least `min_update_steps` optimizer steps."""
    return max(1, math.ceil(min_update_steps / max(1, steps_per_epoch)))


def _apply_task_defaults(spec: SpecBase, doc: SourceDoc, sources: dict[str, str]) -> None:
    for section_name, section in _sections(spec):
        for name, field_info in type(section).model_fields.items():
            key = f"{section_name}.{name}"
            if name in section.model_fields_set:
                sources[key] = str(_position(doc, section_name, names_of(name, field_info)))
                continue
            task_defaults = meta_of(field_info).get("task_defaults", {})
            if spec.task in task_defaults:
                setattr(section, name, task_defaults[spec.task])
                sources[key] = _noted(f"default for task {spec.task}", TASK_DEFAULT_NOTES.get(key))
            else:
                sources[key] = _noted("default", DEFAULT_NOTES.get(key))


def _noted(source: str, note: str | None) -> str:
    return f"{source} ({note})" if note else source


def _apply_llama_recipes_precision(spec: SpecBase, sources: dict[str, str]) -> None:
    """llama-recipes' use_fp16 / mixed_precision booleans, when precision itself is not given."""
    p = spec.precision
    if "precision" in p.model_fields_set:
        return
    if p.use_fp16:
        p.precision = "fp16"
        sources["precision.precision"] = "derived from precision.use_fp16"
    elif p.mixed_precision:
        p.precision = "bf16"
        sources["precision.precision"] = "derived from precision.mixed_precision"
    elif p.mixed_precision is False:  # given as false: llama-recipes trains in 32-bit
        p.precision = "32"
        sources["precision.precision"] = "derived from precision.mixed_precision: false"


def _apply_llm_defaults(spec: SpecBase, sources: dict[str, str]) -> dict[str, bool]:
    """causal_lm: evaluation batch = training batch unless given; the fused optimizer on CUDA unless chosen.

    Returns the derived flags that let the runtime apply them (it knows the device, and the
    command line may change the training batch)."""
    if spec.task not in LLM_TASKS:
        return {}
    derived = {"optim_fused_on_cuda": sources["optimizer.optim"].startswith("default")}
    tr = spec.training
    if sources["training.per_device_eval_batch_size"] == "default":
        tr.per_device_eval_batch_size = tr.per_device_train_batch_size
        sources["training.per_device_eval_batch_size"] = (
            f"default for task {spec.task} (= training.per_device_train_batch_size)"
        )
        derived["eval_batch_from_train"] = True
    return derived


def _position(doc: SourceDoc, section: str, names: tuple[str, ...]) -> Location:
    """Where a parameter was given, under any of its names or its section's aliases."""
    section_names = (section, *(a for a, s in SECTION_ALIASES.items() if s == section))
    for sec in section_names:
        for name in names:
            if (sec, name) in doc.positions:
                return doc.positions[(sec, name)]
    return doc.locate((section,))


def _sections(spec: SpecBase) -> list[tuple[str, BaseModel]]:
    return [
        (name, value)
        for name, value in spec
        if isinstance(value, BaseModel) and name not in ("targets", "lint")
    ]
