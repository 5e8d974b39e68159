"""Anyscale LLMForge fine-tuning YAML (with the DeepSpeed JSON its deepspeed.config_path names) as an ftc spec.

LLMForge's names and defaults: docs.anyscale.com/reference/finetuning-config-api and the fine-tune-llm_v2
template of anyscale/templates (see /work/shared/reference/params-inventory.md, section 1).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ftc.importers.base import Converted, ImportFailed, ImportRefused, Imported, Key, read_yaml_source, typed_value
from ftc.spec.loader import SourceDoc

TOOL = "Anyscale LLMForge"
DEFAULT = "LLMForge default"
# LLMForge defaults that differ from ftc's causal_lm defaults: written out when the file leaves them out.
DEFAULTS: dict[str, Any] = {
    "eval_batch_size_per_device": 1,
    "lr_scheduler_type": "cosine",
    "num_warmup_steps": 10,
    "padding": "longest",
    "flash_attention_2": True,
    "output_dir": "/mnt/local_storage",
}
LORA_DEFAULTS: dict[str, Any] = {"lora_alpha": 16, "lora_dropout": 0.05}
TASKS = ("causal_lm", "instruction_tuning")
PADDING = {"longest": False, "max_length": True}  # padding -> data.pad_to_max_length
SCHEDULERS = ("linear", "cosine")

# LLMForge name -> (ftc key, type); the value is copied after a type check.
DIRECT: dict[str, tuple[Key, type]] = {
    "model_id": (("model", "model_selector_output"), str),
    "train_path": (("data", "train_file_path"), str),
    "valid_path": (("data", "validation_file_path"), str),
    "context_length": (("data", "max_seq_length"), int),
    "num_epochs": (("training", "num_train_epochs"), int),
    "min_update_steps": (("training", "min_update_steps"), int),
    "train_batch_size_per_device": (("training", "per_device_train_batch_size"), int),
    "eval_batch_size_per_device": (("training", "per_device_eval_batch_size"), int),
    "gradient_accumulation_steps": (("training", "gradient_accumulation_steps"), int),
    "learning_rate": (("optimizer", "learning_rate"), float),
    "num_warmup_steps": (("optimizer", "warmup_steps"), int),
    "num_checkpoints_to_keep": (("checkpointing", "save_total_limit"), int),
    "checkpoint_every_n_epochs": (("checkpointing", "checkpoint_every_n_epochs"), int),
    "max_num_checkpoints": (("checkpointing", "max_num_checkpoints"), int),
    "output_dir": (("checkpointing", "output_dir"), str),
    "flash_attention_2": (("precision", "use_fast_kernels"), bool),
    "gradient_checkpointing": (("precision", "gradient_checkpointing"), bool),
    "worker_resources": (("targets", "ray", "worker_resources"), dict),
    "trainer_resources": (("targets", "ray", "trainer_resources"), dict),
}
LORA_DIRECT: dict[str, tuple[str, type]] = {
    "r": ("lora_r", int),
    "lora_alpha": ("lora_alpha", int),
    "lora_dropout": ("lora_dropout", float),
    "target_modules": ("target_modules", list),
    "modules_to_save": ("modules_to_save", list),
    "bias": ("bias", str),
    "fan_in_fan_out": ("fan_in_fan_out", bool),
    "init_lora_weights": ("init_lora_weights", bool),
}
CHAT_TEMPLATE = "ftc formats chats with the tokenizer's chat template; LLMForge's prompt format has no equivalent"
NO_EQUIVALENT = {
    "generation_config": CHAT_TEMPLATE,
    "prompt_format": CHAT_TEMPLATE,
    "dataset_size_scaling_factor": "an internal LLMForge flag",
    "logger": "ftc logs to MLflow, or W&B with tracking.use_wandb",
}
# Names converted in code rather than through a table above (the functions below), for `ftc docs --source`.
CONVERTED: dict[str, Converted] = {
    "task": Converted(("task",), "causal_lm and instruction_tuning are ftc's causal_lm; other tasks are refused"),
    "lr_scheduler_type": Converted(("optimizer.lr_scheduler_type",), "linear or cosine"),
    "padding": Converted(
        ("data.pad_to_max_length", "data.batching_strategy"),
        "longest: false, max_length: true; batches are padded, never packed",
        PADDING,
    ),
    "lora_config": Converted(
        ("lora.apply_lora", "lora.merge_lora_weights"), "LoRA on; the adapter is saved, not merged"
    ),
    "deepspeed": Converted(
        ("deepspeed.apply_deepspeed", "deepspeed.deepspeed_stage"),
        "config_path: the DeepSpeed JSON's stage, offload and precision",
    ),
    "num_devices": Converted(
        ("resources.num_devices", "resources.nodes", "resources.processes_per_node"),
        "with worker_resources' accelerator shape, nodes of its GPUs; else one GPU per worker",
    ),
}
ACCELERATOR = re.compile(r"^accelerator_type:(?P<type>.+)$")
SHAPE = re.compile(r"^anyscale/accelerator_shape:(?P<count>[0-9]+)x(?P<type>.+)$")


class AnyscaleImporter:
    """LLMForge YAML -> ftc settings."""

    name = "anyscale"

    def detect(self, path: Path, text: str) -> bool:
        """An LLMForge config names model_id and train_path at its top level."""
        return all(re.search(rf"^{key}\s*:", text, re.MULTILINE) for key in ("model_id", "train_path"))

    def convert(self, path: Path) -> Imported:
        """Every setting of the file, LLMForge's defaults where ftc's differ, and the resources it asks for."""
        doc = read_yaml_source(path)
        out = Imported(str(path), TOOL)
        _task(doc, out)
        out.set(("targets", "enabled"), ["ray"], "LLMForge runs as a Ray Train job")
        for name, value in doc.data.items():
            _convert_key(doc, out, name, value)
        _defaults(doc, out)
        _devices(doc, out)
        return out


def _convert_key(doc: SourceDoc, out: Imported, name: str, value: Any, origin: str = "") -> None:
    """One top-level LLMForge setting; `origin` defaults to its name."""
    origin = origin or name
    if name in DIRECT:
        key, kind = DIRECT[name]
        out.set(key, typed_value(doc, (name,), value, kind), origin)
    elif name == "lr_scheduler_type":
        _choice(doc, (name,), value, SCHEDULERS)
        out.set(("optimizer", "lr_scheduler_type"), value, origin)
    elif name == "padding":
        _padding(doc, out, value, origin)
    elif name == "lora_config":
        _lora(doc, out, value)
    elif name == "deepspeed":
        _deepspeed(doc, out, value)
    elif name in NO_EQUIVALENT:
        out.skip(name, value, NO_EQUIVALENT[name])
    elif name not in ("task", "num_devices"):
        out.skip(name, value, "no ftc equivalent")


def _task(doc: SourceDoc, out: Imported) -> None:
    """LLMForge's causal_lm and instruction_tuning train a causal LM; its other tasks have no ftc equivalent."""
    task = doc.data.get("task", "causal_lm")
    if task not in TASKS:
        raise ImportFailed(doc.locate(("task",)), "task", f"ftc trains {' and '.join(TASKS)} only, not {task!r}")
    out.set(("task",), "causal_lm", f"task {task}" if "task" in doc.data else "LLMForge trains causal language models")


def _defaults(doc: SourceDoc, out: Imported) -> None:
    """LLMForge's defaults that differ from ftc's, for the names the file leaves out."""
    for name, value in DEFAULTS.items():
        if name not in doc.data:
            _convert_key(doc, out, name, value, f"{DEFAULT} {name}: {json.dumps(value)}")
    if "context_length" not in doc.data:
        out.warnings.append(
            f"{doc.file}: context_length is not given: LLMForge derives it from the data (the 95th percentile of "
            "token counts, at least the model's context); ftc uses the model's maximum, at most 4096"
        )


def _padding(doc: SourceDoc, out: Imported, value: Any, origin: str) -> None:
    """LLMForge pads each batch (longest) or to context_length (max_length); it never packs as ftc's causal_lm does."""
    if value not in PADDING:
        raise ImportRefused(doc.locate(("padding",)), "padding", value, list(PADDING), TOOL)
    out.set(("data", "pad_to_max_length"), PADDING[value], origin)
    out.set(("data", "batching_strategy"), "padding", f"{origin} (LLMForge pads batches, it does not pack)")


def _lora(doc: SourceDoc, out: Imported, config: Any) -> None:
    """A lora_config block turns LoRA on; its peft.LoraConfig fields map one to one."""
    config = typed_value(doc, ("lora_config",), config, dict)
    out.set(("lora", "apply_lora"), True, "lora_config is given")
    out.set(("lora", "merge_lora_weights"), False, "LLMForge saves the LoRA adapter, not a merged model")
    for name, value in {**LORA_DEFAULTS, **config}.items():
        origin = f"lora_config.{name}" if name in config else f"{DEFAULT} lora_config.{name}: {json.dumps(value)}"
        if name in LORA_DIRECT:
            field, kind = LORA_DIRECT[name]
            out.set(("lora", field), typed_value(doc, ("lora_config", name), value, kind), origin)
        elif not (name == "task_type" and value == "CAUSAL_LM"):  # CAUSAL_LM is what task causal_lm uses
            out.skip(f"lora_config.{name}", value, "ftc sets no other peft.LoraConfig field")


def _devices(doc: SourceDoc, out: Imported) -> None:
    """num_devices Ray Train workers of one GPU of the worker_resources accelerator, as ftc resources: nodes of
    an `anyscale/accelerator_shape:NxTYPE` N GPUs each, else one worker a node (Ray may pack several on one)."""
    devices = typed_value(doc, ("num_devices",), doc.data.get("num_devices", 1), int)
    resources = doc.data.get("worker_resources") or {}
    per_node, accelerator = 0, None
    for name in resources:
        if shape := SHAPE.match(str(name)):
            per_node, accelerator = int(shape["count"]), shape["type"]
        elif match := ACCELERATOR.match(str(name)):
            accelerator = match["type"]
    if accelerator is not None:
        out.set(("resources", "accelerator_type"), accelerator, "worker_resources")
    origin = "num_devices" if "num_devices" in doc.data else f"{DEFAULT} num_devices 1"
    if per_node and devices % per_node == 0:
        out.set(("resources", "nodes"), devices // per_node, f"{origin} / the {per_node} GPUs of the accelerator shape")
        out.set(("resources", "processes_per_node"), per_node, "worker_resources accelerator shape")
    else:
        out.set(("resources", "nodes"), devices, f"{origin}: Ray Train workers of one GPU each, placed by Ray")
        out.set(("resources", "processes_per_node"), 1, "LLMForge gives each worker one GPU")
    out.set(("resources", "num_devices"), devices, origin)


def _deepspeed(doc: SourceDoc, out: Imported, section: Any) -> None:
    """deepspeed.config_path: the JSON it names, as ftc's DeepSpeed settings (ZeRO stage, offload, precision)."""
    section = typed_value(doc, ("deepspeed",), section, dict)
    for name, value in section.items():
        if name != "config_path":
            out.skip(f"deepspeed.{name}", value, "no ftc equivalent")
    if "config_path" not in section:
        return
    where = ("deepspeed", "config_path")
    file = _config_file(doc, typed_value(doc, where, section["config_path"], str))
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        message = f"{file} cannot be read as JSON: {exc}"
        raise ImportFailed(doc.locate(where), "deepspeed.config_path", message) from None
    if not isinstance(config, dict):
        raise ImportFailed(doc.locate(where), "deepspeed.config_path", f"{file} is not a JSON object")
    _deepspeed_json(doc, out, config, f"from deepspeed config {section['config_path']}")


def _config_file(doc: SourceDoc, name: str) -> Path:
    """The DeepSpeed JSON: relative to the YAML's folder or, as LLMForge's templates run, one of its parents."""
    given = Path(name)
    folders = [Path("/")] if given.is_absolute() else [doc.base_dir, *doc.base_dir.parents]
    for candidate in (folder / given for folder in folders):
        if candidate.is_file():
            return candidate
    raise ImportFailed(
        doc.locate(("deepspeed", "config_path")), "deepspeed.config_path",
        f"{name} is not found next to {doc.file} or in a folder above it",
    )


def _deepspeed_json(doc: SourceDoc, out: Imported, config: dict[str, Any], origin: str) -> None:
    """The ZeRO stage, the offloads and the precision of a DeepSpeed config as ftc's DeepSpeed settings."""
    zero = _part(config, "zero_optimization")
    stage = zero.get("stage", 0)
    if stage not in (2, 3):
        raise ImportFailed(
            doc.locate(("deepspeed", "config_path")), "deepspeed.config_path",
            f"ZeRO stage {stage!r}: ftc runs DeepSpeed ZeRO stages 2 and 3",
        )
    out.set(("deepspeed", "apply_deepspeed"), True, origin)
    out.set(("deepspeed", "deepspeed_stage"), str(stage), origin)
    for part in ("offload_optimizer", "offload_param"):
        device = _part(zero, part).get("device", "none")
        out.set(("deepspeed", part), device != "none", f"{origin}: {part}.device {device}")
        if device == "nvme":
            out.warnings.append(f"{doc.file}: {origin}: {part} to nvme: ftc offloads to CPU memory instead")
    for precision in ("bf16", "fp16"):
        if _part(config, precision).get("enabled") is True:
            out.set(("precision", "precision"), precision, origin)
    _deepspeed_rest(out, config, zero, origin)


def _deepspeed_rest(out: Imported, config: dict[str, Any], zero: dict[str, Any], origin: str) -> None:
    """DeepSpeed settings ftc's own config decides: the non-"auto" ones are listed as not imported."""
    mapped = {"zero_optimization", "bf16", "fp16"}
    rest = {k: v for k, v in config.items() if k not in mapped}
    zero_mapped = {"stage", "offload_optimizer", "offload_param"}
    rest |= {f"zero_optimization.{k}": v for k, v in zero.items() if k not in zero_mapped}
    for name, value in rest.items():
        if value != "auto":
            out.skip(f"deepspeed {name}", value, f"{origin}: ftc's DeepSpeed config sets its own value")


def _part(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The sub-object `name` of a DeepSpeed config; empty when absent or not an object."""
    part = config.get(name)
    return part if isinstance(part, dict) else {}


def _choice(doc: SourceDoc, where: Key, value: Any, accepted: tuple[str, ...]) -> None:
    """Refuse what LLMForge's config model refuses."""
    if value not in accepted:
        raise ImportRefused(doc.locate(where), ".".join(where), value, list(accepted), TOOL)


IMPORTER = AnyscaleImporter()
