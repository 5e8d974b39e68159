"""`ftc docs --source TOOL`: a Markdown page of a tool's names beside ftc's keys, and the defaults that differ.

The names come from the importer's own tables (DIRECT/TRAIN, LORA_DIRECT, NO_EQUIVALENT, DEFAULTS,
LORA_DEFAULTS); the names its functions convert are listed in CONVERTED below. ftc's defaults are read from
the spec schema (the causal_lm defaults, the task every importer writes); the caller registers the targets
first (`import ftc.backends.registry`, as `ftc docs` does), since the schema has their sections.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ftc.importers import SOURCES
from ftc.importers.anyscale import PADDING
from ftc.spec.docs import default_value, format_value, iter_params, markdown_table

TASK = "causal_lm"
NONE = "(none)"
PAGES = ("anyscale", "llama-recipes", "axolotl")
LORA_PREFIX = {"anyscale": "lora_config."}  # where a tool nests its LoRA names, as its files write them


@dataclass(frozen=True)
class Converted:
    """A name an importer converts in code rather than through a table: the ftc keys it sets, and how."""

    keys: tuple[str, ...]
    note: str
    values: dict[Any, Any] | None = None  # the tool's value -> the first key's value, where they differ


# Names each importer converts in a function of its own (not a one-to-one table row).
CONVERTED: dict[str, dict[str, Converted]] = {
    "anyscale": {
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
    },
    "llama-recipes": {
        "quantization": Converted(("precision.quantization",), "4bit or 8bit: QLoRA"),
        "peft_method": Converted(("lora.peft_method",), "lora or llama_adapter; prefix is refused"),
        "max_train_step": Converted(("training.max_steps",), "0 (every step) is ftc's default and is not written"),
        "wandb_config.*": Converted(
            ("tracking.wandb_config.*",), "project, entity, job_type, tags, group, notes, mode"
        ),
    },
    "axolotl": {
        "adapter": Converted(
            ("lora.apply_lora", "lora.merge_lora_weights"), "lora or qlora; the adapter is saved, not merged"
        ),
        "load_in_4bit": Converted(("precision.quantization",), "with an adapter: QLoRA"),
        "load_in_8bit": Converted(("precision.quantization",), "with an adapter: QLoRA"),
        "val_set_size": Converted(("data.validation_split_ratio",), "0 evaluates nothing"),
        "eval_strategy": Converted(("evaluation.evaluation_strategy",), "no evaluates nothing"),
        "evals_per_epoch": Converted(("evaluation.evaluation_steps_interval",), "1 / evals_per_epoch"),
        "eval_steps": Converted(("evaluation.eval_steps",), "an integer; a fraction is not imported"),
        "datasets": Converted(("data.train_file_path",), "the first dataset's path; prompt formats are not imported"),
        "sample_packing": Converted(("data.batching_strategy",), "true: packing, false: padding"),
        "num_epochs": Converted(("training.num_train_epochs",), "whole epochs only"),
        "lr_scheduler": Converted(("optimizer.lr_scheduler_type",), "the schedulers ftc runs"),
        "optimizer": Converted(("optimizer.optim",), "8-bit and other special optimizers fall back to AdamW"),
        "bf16": Converted(("precision.precision",), "true: bf16, auto: auto, false: 32 (with fp16)"),
        "fp16": Converted(("precision.precision",), "true: fp16"),
        "attn_implementation": Converted(("precision.use_fast_kernels",), "flash_attention_2/3 or sdpa"),
        "flash_attention": Converted(("precision.use_fast_kernels",), ""),
        "gradient_checkpointing": Converted(("precision.gradient_checkpointing",), "offload variants checkpoint"),
        "torch_compile": Converted(("precision.torch_compile",), ""),
        "deepspeed": Converted(("deepspeed.apply_deepspeed", "deepspeed.deepspeed"), "a DeepSpeed JSON path"),
        "fsdp_config": Converted(("fsdp.enable_fsdp",), "its offload, resharding and state dict keys map one to one"),
        "fsdp": Converted(("fsdp.enable_fsdp", "fsdp.sharding_strategy"), "the deprecated list form"),
        "early_stopping_patience": Converted(
            ("early_stopping.apply_early_stopping", "early_stopping.early_stopping_patience"), ""
        ),
        "logging_steps": Converted(("tracking.logging_strategy", "tracking.logging_steps"), ""),
        "wandb_project": Converted(("tracking.use_wandb", "tracking.wandb_config.project"), "turns W&B on"),
        "wandb_entity": Converted(("tracking.wandb_config.entity",), ""),
        "wandb_mode": Converted(("tracking.wandb_config.mode",), ""),
        **{
            name: Converted((), "ftc sets no other W&B option")
            for name in ("wandb_name", "wandb_watch", "wandb_log_model", "wandb_run_id")
        },
    },
}


def _module(source: str) -> ModuleType:
    return importlib.import_module(SOURCES[source])


def _key(key: tuple[str, ...]) -> str:
    return ".".join(key)


def _table_keys(source: str) -> dict[str, str]:
    """The tool's name -> ftc key, from the importer's one-to-one tables (LoRA names under their section)."""
    module = _module(source)
    direct = getattr(module, "DIRECT", None) or module.TRAIN
    keys = {name: _key(key) for name, (key, _) in direct.items()}
    for name, (field, _) in getattr(module, "LORA_DIRECT", {}).items():
        keys[LORA_PREFIX.get(source, "") + name] = f"lora.{field}"
    return keys


def name_rows(source: str) -> list[tuple[str, str, str]]:
    """Name | ftc key | Note, sorted by name: table rows, converted names, then names ftc has no equivalent for."""
    rows = [(f"`{name}`", f"`{key}`", "") for name, key in _table_keys(source).items()]
    for name, converted in CONVERTED[source].items():
        rows.append((f"`{name}`", ", ".join(f"`{key}`" for key in converted.keys) or NONE, converted.note))
    for name, note in _module(source).NO_EQUIVALENT.items():
        if name not in CONVERTED[source]:
            rows.append((f"`{name}`", NONE, note))
    return sorted(rows, key=lambda row: row[0].strip("`"))


def _tool_defaults(source: str) -> dict[str, Any]:
    """The tool's defaults that its importer writes where they differ from ftc's (LoRA ones under their name)."""
    module = _module(source)
    prefix = LORA_PREFIX.get(source, "")
    lora = {prefix + name: value for name, value in getattr(module, "LORA_DEFAULTS", {}).items()}
    return {**module.DEFAULTS, **lora}


def ftc_defaults() -> dict[str, Any]:
    """Every spec key's causal_lm default, from the schema."""
    return {param.key: default_value(param, TASK) for param in iter_params()}


def default_rows(source: str) -> list[tuple[str, str, str]]:
    """Name | tool default | ftc default, for each default the importer writes that differs from the schema's."""
    keys = _table_keys(source)
    keys.update({name: converted.keys[0] for name, converted in CONVERTED[source].items() if converted.keys})
    schema = ftc_defaults()
    rows = []
    for name, value in _tool_defaults(source).items():
        key = keys[name]
        values = CONVERTED[source][name].values if name in CONVERTED[source] else None
        shown, ftc_value = _shown(value), value
        if values is not None:
            ftc_value = values[value]
            shown += f" (`{key}`: {_shown(ftc_value)})"
        if ftc_value != schema[key]:
            rows.append((f"`{name}`", shown, f"{_shown(schema[key])} (`{key}`)"))
    return sorted(rows)


def _shown(value: Any) -> str:
    text = format_value(value)
    return f"`{text}`" if text else NONE


def render_source_docs(source: str) -> str:
    """The Markdown page of one tool: its names beside ftc's keys, and the defaults that differ."""
    if source not in PAGES:
        raise KeyError(f"unknown source {source!r}; sources: {', '.join(PAGES)}")
    tool = _module(source).TOOL
    parts = [
        f"# Importing from {tool}\n",
        "<!-- generated by `ftc docs --source " + source + "`; do not edit -->\n",
        f"`ftc import FILE --from {source}` turns a config of {tool} into an ftc spec that means the same: "
        "each name below becomes the ftc keys beside it; names without an equivalent are reported, not imported.\n",
        "## Names\n",
        markdown_table(("Name", "ftc key", "Note"), name_rows(source)),
        "## Defaults that differ\n",
        f"Where the file leaves one of these out, the import writes the {tool} default, so the run keeps its "
        f"meaning. The ftc default is the `{TASK}` default of the spec schema.\n",
        markdown_table(("Name", f"{tool} default", "ftc default"), default_rows(source)),
    ]
    return "\n".join(parts)
