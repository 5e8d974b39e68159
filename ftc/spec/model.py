"""The root of a finetune spec, assembled from the sections and the registered backends' options."""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, model_validator

from ftc.spec import sections as s
from ftc.spec.fields import TASKS, Section, names_of, param

Task = Literal[TASKS]  # type: ignore[valid-type]

# Whole sections accepted under the names other systems give them.
SECTION_ALIASES = {"lora_config": "lora", "fsdp_config": "fsdp"}
# (section, switch, the keys that imply it: any key when empty), as another tool means them: Anyscale turns
# LoRA on with a lora_config block of LoRA settings, LLMForge turns DeepSpeed on with deepspeed.config_path
# (the Azure ML name deepspeed.deepspeed keeps needing apply_deepspeed: FTC103).
IMPLIED_SWITCHES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("lora", "apply_lora", ()),
    ("deepspeed", "apply_deepspeed", ("config_path",)),
)
# Target-only settings accepted in resources (where the systems ftc reads keep them), and the target whose section
# holds them: they are moved there before validation, and lint rule FTC148 notes it.
MOVED_TO_TARGETS = {
    "worker_resources": "ray",
    "trainer_resources": "ray",
    "compute": "azureml",
    "compute_finetune": "azureml",
    "instance_type": "azureml",
    "instance_type_finetune": "azureml",
}
# A section given as a scalar stands for its main parameter: `model: ./my-model`, `precision: 16`.
SCALAR_SHORTHANDS = {"model": "model_selector_output", "precision": "precision"}


class SpecBase(Section):
    """Fields and normalisation shared by every spec, whatever backends are installed: every section but
    `targets`. The runtime validates resolved configs (which have no targets) with it, loading no backend."""

    version: Literal[1] = param(1, "Version of the spec format.")
    task: Task = param(description="The finetuning task.")  # type: ignore[valid-type]
    name: str | None = param(
        None,
        "Name of the job and its artifacts; default: <task>_finetune.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$",
    )
    description: str | None = param(None, "A sentence saying what this finetune is for.")
    model: s.ModelSection
    data: s.DataSection
    lora: s.LoraSection = Field(default_factory=s.LoraSection, description=s.LoraSection.__doc__)
    training: s.TrainingSection = Field(default_factory=s.TrainingSection, description=s.TrainingSection.__doc__)
    optimizer: s.OptimizerSection = Field(default_factory=s.OptimizerSection, description=s.OptimizerSection.__doc__)
    evaluation: s.EvaluationSection = Field(
        default_factory=s.EvaluationSection, description=s.EvaluationSection.__doc__
    )
    early_stopping: s.EarlyStoppingSection = Field(
        default_factory=s.EarlyStoppingSection, description=s.EarlyStoppingSection.__doc__
    )
    checkpointing: s.CheckpointingSection = Field(
        default_factory=s.CheckpointingSection, description=s.CheckpointingSection.__doc__
    )
    deepspeed: s.DeepSpeedSection = Field(default_factory=s.DeepSpeedSection, description=s.DeepSpeedSection.__doc__)
    fsdp: s.FsdpSection = Field(default_factory=s.FsdpSection, description=s.FsdpSection.__doc__)
    ort: s.OrtSection = Field(default_factory=s.OrtSection, description=s.OrtSection.__doc__)
    precision: s.PrecisionSection = Field(default_factory=s.PrecisionSection, description=s.PrecisionSection.__doc__)
    tracking: s.TrackingSection = Field(default_factory=s.TrackingSection, description=s.TrackingSection.__doc__)
    resources: s.ResourcesSection = Field(default_factory=s.ResourcesSection, description=s.ResourcesSection.__doc__)
    env: s.EnvSection = Field(default_factory=s.EnvSection, description=s.EnvSection.__doc__)
    lint: s.LintSection = Field(default_factory=s.LintSection, description=s.LintSection.__doc__)

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for alias, section in SECTION_ALIASES.items():
            if alias in data:
                if section in data:
                    raise ValueError(f"{alias} and {section} name the same section: keep one")
                data[section] = data.pop(alias)
        _imply_switches(data)
        if isinstance(data.get("targets"), list):
            data["targets"] = {"enabled": data["targets"]}
        _move_to_targets(data)
        for section, key in SCALAR_SHORTHANDS.items():
            value = data.get(section)
            if value is not None and not isinstance(value, (dict, list)):
                data[section] = {key: value}
        return data


def _imply_switches(data: dict[str, Any]) -> None:
    """Turn on what another tool's spelling means is on (in place, copies), unless the switch is written under
    any of its names: a LoRA section with LoRA settings (Anyscale `lora_config`, or the same keys under `lora`)
    turns LoRA on, and LLMForge's `deepspeed.config_path` turns DeepSpeed on with that file."""
    for section, switch, trigger in IMPLIED_SWITCHES:
        block = data.get(section)
        names = names_of(switch, parameter_sections()[section].model_fields[switch])
        if not isinstance(block, dict) or any(name in block for name in names):
            continue
        if any(key in block for key in trigger) if trigger else block:
            data[section] = {switch: True, **block}


def _move_to_targets(data: dict[str, Any]) -> None:
    """Move the MOVED_TO_TARGETS keys of `data["resources"]` to their target's section (in place, copies)."""
    resources = data.get("resources")
    if not isinstance(resources, dict) or not any(key in MOVED_TO_TARGETS for key in resources):
        return
    targets = data.get("targets")
    targets = dict(targets) if isinstance(targets, dict) else {}
    resources = dict(resources)
    for key in [k for k in resources if k in MOVED_TO_TARGETS]:
        target = MOVED_TO_TARGETS[key]
        section = dict(targets.get(target) or {})
        if key in section:
            raise ValueError(f"resources.{key} and targets.{target}.{key} name the same setting: keep one")
        section[key] = resources.pop(key)
        targets[target] = section
    data["resources"], data["targets"] = resources, targets


def _targets_model() -> type[BaseModel]:
    from ftc.spec.targets import targets

    names = Literal[tuple(targets())]  # type: ignore[valid-type]
    fields: dict[str, Any] = {
        "enabled": (
            list[names] | None,  # type: ignore[valid-type]
            param(
                None,
                "The targets this spec is for; `-t all` (compile and lint) means these, and compiling for another "
                "target is an error (FTC002). Default: every target. `targets: [slurm, ray]` is short for "
                "`targets: {enabled: [slurm, ray]}`.",
                min_length=1,
            ),
        ),
    }
    fields.update(
        (name, (backend.Options, Field(default_factory=backend.Options, description=backend.Options.__doc__)))
        for name, backend in targets().items()
    )
    return create_model("Targets", __base__=Section, __doc__="Per-target settings.", **fields)


@functools.cache
def spec_model() -> type[SpecBase]:
    """The spec model with a `targets.<name>` section for every registered backend."""
    targets = _targets_model()
    return create_model(
        "FinetuneSpec",
        __base__=SpecBase,
        __doc__="A finetune spec: one file, every target.",
        targets=(targets, Field(default_factory=targets, description="Per-target settings.")),
    )


def section_models() -> dict[str, type[BaseModel]]:
    """Section name -> model, for every section of the spec (targets included)."""
    return _sections_of(spec_model())


def parameter_sections() -> dict[str, type[BaseModel]]:
    """Section name -> model, for the sections of parameters: every section but targets (no backend loaded)."""
    return _sections_of(SpecBase)


def _sections_of(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out[name] = ann
    return out
