"""Resolve a validated spec: task defaults, the other systems' spellings, derived values, provenance.

The result is what every target's runtime reads (`ftc.resolved.json`) and what `ftc explain` shows.
"""

from __future__ import annotations

from pydantic import BaseModel

from ftc.errors import Location
from ftc.spec.derived import EPOCHS, EVAL_BATCH, OPTIM, Derived, derive, follow_derived
from ftc.spec.fields import meta_of, names_of
from ftc.spec.loader import SourceDoc
from ftc.spec.model import SECTION_ALIASES, SpecBase
from ftc.spec.resolved import Resolved

# What a default means beyond its value, shown by `ftc explain` next to its source.
DEFAULT_NOTES = {"precision.precision": "bf16 on GPUs that have it, else fp16; 32-bit on CPU; decided at run time"}
TASK_DEFAULT_NOTES = {
    "data.max_seq_length": "or the model's maximum when smaller",
    "optimizer.optim": "adamw_torch_fused on CUDA GPUs",
}


def resolve(spec: SpecBase, doc: SourceDoc) -> Resolved:
    """Apply task defaults and cross-system spellings, and derive the values targets need."""
    sources: dict[str, str] = {}
    _apply_task_defaults(spec, doc, sources)
    _apply_llama_recipes_precision(spec, sources)
    res = spec.resources
    if res.num_devices is not None and "processes_per_node" not in res.model_fields_set:
        res.processes_per_node = res.num_devices // res.nodes
        sources["resources.processes_per_node"] = "derived from resources.num_devices"
    if spec.precision.quantization and "apply_lora" not in spec.lora.model_fields_set:
        spec.lora.apply_lora = True  # QLoRA: a quantized model trains through an adapter only
        sources["lora.apply_lora"] = "derived from precision.quantization"
    derived = derive(spec, _defaults(sources))
    _note_followers(spec, derived, sources)
    follow_derived(spec, derived)
    return Resolved(spec=spec, doc=doc, derived=derived, sources=sources)


def _defaults(sources: dict[str, str]) -> set[str]:
    """The parameters derive() asks about whose values are defaults (of the spec format or of the task)."""
    return {key for key in (OPTIM, EVAL_BATCH, EPOCHS) if sources[key].startswith("default")}


def _note_followers(spec: SpecBase, derived: Derived, sources: dict[str, str]) -> None:
    """The sources of the parameters follow_derived() is about to set."""
    if not spec.evaluation.run_validation and spec.evaluation.evaluation_strategy != "no":
        sources["evaluation.evaluation_strategy"] = "derived from evaluation.run_validation: false"
    if derived.eval_batch_from_train:
        sources[EVAL_BATCH] = f"default for task {spec.task} (= training.per_device_train_batch_size)"


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
