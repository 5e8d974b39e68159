"""Axolotl YAML configs as ftc specs.

Axolotl's names and defaults: its pydantic config models, src/axolotl/utils/schemas/ (config.py, training.py,
peft.py, model.py, validation.py) of axolotl-ai-cloud/axolotl at the commit recorded in
tests/importers/fixtures/axolotl/SOURCES.md. A key written with no value (`lora_model_dir:`) is None, which
Axolotl reads as not set. Defaults equal to ftc's causal_lm defaults are left out: gradient_accumulation_steps
1, micro_batch_size 1 (the evaluation batch follows it in both), weight_decay 0, seed 42, bf16 auto (ftc's
precision auto), max_grad_norm 1.0 (transformers'), and optimizer adamw_torch_fused (ftc's causal_lm choice on
CUDA GPUs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ftc.importers.base import Converted, ImportFailed, ImportRefused, Imported, Key, read_yaml_source, typed_value
from ftc.spec.loader import SourceDoc

TOOL = "Axolotl"
DEFAULT = "Axolotl default"
ADAPTERS = ("lora", "qlora")
ACCEPTED_ADAPTERS = ["lora", "qlora", "llama-adapter", "an adapter a listed plugin registers"]
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_hf", "adafactor", "sgd")
FAST_ATTENTION = ("flash_attention_2", "flash_attention_3", "sdpa")

# Axolotl name -> (ftc key, type); the value is copied after a type check.
DIRECT: dict[str, tuple[Key, type]] = {
    "base_model": (("model", "model_selector_output"), str),
    "tokenizer_config": (("model", "tokenizer_name"), str),
    "sequence_len": (("data", "max_seq_length"), int),
    "pad_to_sequence_len": (("data", "pad_to_max_length"), bool),
    "micro_batch_size": (("training", "per_device_train_batch_size"), int),
    "eval_batch_size": (("training", "per_device_eval_batch_size"), int),
    "gradient_accumulation_steps": (("training", "gradient_accumulation_steps"), int),
    "max_steps": (("training", "max_steps"), int),
    "seed": (("training", "seed"), int),
    "max_grad_norm": (("training", "max_grad_norm"), float),
    "dataloader_num_workers": (("training", "dataloader_num_workers"), int),
    "learning_rate": (("optimizer", "learning_rate"), float),
    "warmup_steps": (("optimizer", "warmup_steps"), int),
    "weight_decay": (("optimizer", "weight_decay"), float),
    "adam_beta1": (("optimizer", "adam_beta1"), float),
    "adam_beta2": (("optimizer", "adam_beta2"), float),
    "adam_epsilon": (("optimizer", "adam_epsilon"), float),
    "output_dir": (("checkpointing", "output_dir"), str),
    "save_total_limit": (("checkpointing", "save_total_limit"), int),
    "resume_from_checkpoint": (("checkpointing", "resume_from_checkpoint"), str),
}
# Read only when `adapter` is set: Axolotl ignores them for a full finetune.
LORA_DIRECT: dict[str, tuple[str, type]] = {
    "lora_r": ("lora_r", int),
    "lora_alpha": ("lora_alpha", int),
    "lora_dropout": ("lora_dropout", float),
    "lora_target_modules": ("target_modules", list),
    "lora_modules_to_save": ("modules_to_save", list),
    "lora_fan_in_fan_out": ("fan_in_fan_out", bool),
    "lora_model_dir": ("from_peft_checkpoint", str),
}
# Axolotl defaults that differ from ftc's causal_lm defaults: written out when the file leaves them out.
DEFAULTS: dict[str, Any] = {"sequence_len": 512, "output_dir": "./model-out", "lr_scheduler": "cosine"}
PROMPTS = "ftc trains on the data file's text or messages column; Axolotl's prompt formats have no equivalent"
NO_EQUIVALENT = {
    "chat_template": PROMPTS,
    "special_tokens": "ftc keeps the tokenizer's special tokens",
    "tokens": "ftc adds no tokens to the tokenizer",
    "plugins": "ftc runs no Axolotl plugins",
    "train_on_inputs": "ftc trains on every token of a packed or padded row",
    "dataset_prepared_path": "ftc caches tokenized data in its own cache",
    "eval_sample_packing": "ftc evaluates batches as it trains them",
    "lora_target_linear": "ftc names LoRA's modules explicitly (lora.target_modules); give them there",
    "tf32": "ftc leaves TF32 matmuls at PyTorch's setting",
    "warmup_ratio": "ftc counts warmup in steps (optimizer.warmup_steps); the step count depends on the data size",
    "saves_per_epoch": "ftc saves a checkpoint each epoch",
    "save_steps": "ftc saves a checkpoint each epoch",
    "hub_model_id": "ftc does not push to the Hugging Face Hub",
    "model_type": "ftc loads the model with transformers' Auto classes",
    "tokenizer_type": "ftc loads the tokenizer with transformers' Auto classes",
}
# Names converted in code rather than through a table above (the functions below), for `ftc docs --source`.
CONVERTED: dict[str, Converted] = {
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
}


class AxolotlImporter:
    """Axolotl YAML -> ftc settings."""

    name = "axolotl"

    def detect(self, path: Path, text: str) -> bool:
        """An Axolotl config names base_model and datasets at its top level, or its first line is a comment that
        names Axolotl."""
        if re.match(r"\s*#[^\n]*\baxolotl\b", text, re.IGNORECASE):
            return True
        return all(re.search(rf"^{key}\s*:", text, re.MULTILINE) for key in ("base_model", "datasets"))

    def convert(self, path: Path) -> Imported:
        """Every setting of the file, Axolotl's defaults where ftc's differ."""
        doc = read_yaml_source(path)
        data = {name: value for name, value in doc.data.items() if value is not None}
        out = Imported(str(path), TOOL)
        out.set(("task",), "causal_lm", "Axolotl trains causal language models")
        if "learning_rate" not in data:
            raise ImportFailed(doc.locate(()), "learning_rate", "is required by Axolotl and not given")
        _check_rules(doc, data)
        for name, value in data.items():
            _convert_key(doc, data, out, name, value)
        _defaults(doc, data, out)
        return out


def _convert_key(doc: SourceDoc, data: dict[str, Any], out: Imported, name: str, value: Any, origin: str = "") -> None:
    """One top-level Axolotl setting; `origin` defaults to its name."""
    origin = origin or name
    if name in DIRECT:
        key, kind = DIRECT[name]
        out.set(key, typed_value(doc, (name,), value, kind), origin)
    elif name in LORA_DIRECT or name == "adapter":
        if "adapter" not in data:
            out.skip(name, value, "no adapter is set: Axolotl trains the full model and ignores it")
        elif name == "adapter":
            _adapter(doc, data, out)
        else:
            _lora_key(doc, out, name, value, origin)
    elif name in HANDLERS:
        HANDLERS[name](doc, data, out, value, origin)
    elif name in NO_EQUIVALENT:
        out.skip(name, value, NO_EQUIVALENT[name])
    elif name not in HANDLED_ELSEWHERE:
        out.skip(name, value, "no ftc equivalent")


def _check_rules(doc: SourceDoc, data: dict[str, Any]) -> None:
    """Axolotl's own cross-field rules (schemas/validation.py, peft.py): what it rejects is refused here."""
    pairs = [("warmup_steps", "warmup_ratio"), ("save_steps", "saves_per_epoch"), ("eval_steps", "evals_per_epoch")]
    for first, second in pairs:
        if data.get(first) and data.get(second):
            accepted = [f"{first} or {second}, not both"]
            raise ImportRefused(doc.locate((second,)), second, data[second], accepted, TOOL)
    adapter = data.get("adapter")
    if adapter is not None and adapter not in (*ADAPTERS, "llama-adapter"):
        raise ImportRefused(doc.locate(("adapter",)), "adapter", adapter, ACCEPTED_ADAPTERS, TOOL)
    if not adapter and (data.get("load_in_4bit") or data.get("load_in_8bit")):
        name = "load_in_4bit" if data.get("load_in_4bit") else "load_in_8bit"
        raise ImportRefused(doc.locate((name,)), name, True, ["false without an adapter"], TOOL)
    if adapter == "qlora" and (data.get("load_in_8bit") or not data.get("load_in_4bit")):
        raise ImportRefused(doc.locate(("adapter",)), "adapter", "qlora", ["qlora with load_in_4bit: true"], TOOL)


def _adapter(doc: SourceDoc, data: dict[str, Any], out: Imported) -> None:
    """lora and qlora turn LoRA on; Axolotl saves the adapter and merges only with `axolotl merge-lora`."""
    adapter = data["adapter"]
    if adapter not in ADAPTERS:
        raise ImportFailed(doc.locate(("adapter",)), "adapter", f"ftc imports lora and qlora, not {adapter!r}")
    out.set(("lora", "apply_lora"), True, f"adapter {adapter}")
    out.set(("lora", "merge_lora_weights"), False, "Axolotl saves the adapter; merging is `axolotl merge-lora`")
    if "lora_dropout" not in data:
        out.set(("lora", "lora_dropout"), 0.0, f"{DEFAULT} lora_dropout: 0.0")
    quantization = "4bit" if data.get("load_in_4bit") else "8bit" if data.get("load_in_8bit") else None
    if quantization is not None:
        out.set(("precision", "quantization"), quantization, f"load_in_{quantization}")
    for name in ("lora_r", "lora_alpha"):
        if name not in data:
            out.warnings.append(f"{doc.file}: {name} is not given: ftc uses its own default")


def _lora_key(doc: SourceDoc, out: Imported, name: str, value: Any, origin: str) -> None:
    """A lora_* setting as its ftc LoRA field (a single target module name is a list of one)."""
    field, kind = LORA_DIRECT[name]
    if kind is list and isinstance(value, str):
        value = [value]
    out.set(("lora", field), typed_value(doc, (name,), value, kind), origin)


def _datasets(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    """The first dataset's path is the training data; its prompt format and any other dataset are not imported."""
    datasets = typed_value(doc, ("datasets",), value, list)
    if not datasets or not isinstance(datasets[0], dict) or "path" not in datasets[0]:
        raise ImportFailed(doc.locate(("datasets",)), "datasets", "needs a first entry with a path")
    first = datasets[0]
    path = typed_value(doc, ("datasets", "0", "path"), first["path"], str)
    out.set(("data", "train_file_path"), path, "datasets[0].path")
    if "://" not in path and not (doc.base_dir / path).exists():
        out.warnings.append(
            f"{doc.file}: datasets[0].path {path!r} is not a file here; Axolotl also reads Hugging Face Hub "
            "dataset ids, ftc reads data files: give a local file or an hf:// URI of one"
        )
    for name, item in first.items():
        if name != "path" and item is not None:
            out.skip(f"datasets[0].{name}", item, PROMPTS if name == "type" else "no ftc equivalent")
    for index, extra in enumerate(datasets[1:], start=1):
        out.skip(f"datasets[{index}]", extra, "ftc reads one training file")


def _sample_packing(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    packing = typed_value(doc, ("sample_packing",), value, bool)
    out.set(("data", "batching_strategy"), "packing" if packing else "padding", origin)


def _num_epochs(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    """Axolotl reads num_epochs as a float; ftc trains whole epochs."""
    epochs = typed_value(doc, ("num_epochs",), value, float)
    if not epochs.is_integer():
        raise ImportFailed(doc.locate(("num_epochs",)), "num_epochs", f"{value!r}: ftc trains whole epochs")
    out.set(("training", "num_train_epochs"), int(epochs), origin)


def _lr_scheduler(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    if value not in SCHEDULERS:
        message = f"{value!r} has no ftc equivalent; ftc runs {', '.join(SCHEDULERS)}"
        raise ImportFailed(doc.locate(("lr_scheduler",)), "lr_scheduler", message)
    out.set(("optimizer", "lr_scheduler_type"), value, origin)


def _optimizer(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    """Optimizers ftc runs map by name; 8-bit and other special optimizers fall back to ftc's AdamW."""
    if value in OPTIMIZERS:
        out.set(("optimizer", "optim"), value, origin)
    else:
        out.skip("optimizer", value, f"ftc runs {', '.join(OPTIMIZERS)}; it trains with its default AdamW instead")


def _precision(doc: SourceDoc, data: dict[str, Any], out: Imported) -> None:
    """bf16 (true, false or auto) with fp16: bf16 true is bf16, fp16 true fp16, auto ftc's auto, neither 32-bit."""
    bf16, fp16 = data.get("bf16", "auto"), data.get("fp16")
    if bf16 is True:
        out.set(("precision", "precision"), "bf16", "bf16")
    elif fp16 is True:
        out.set(("precision", "precision"), "fp16", "fp16")
    elif bf16 == "auto":
        out.set(("precision", "precision"), "auto", "bf16 auto")
    elif bf16 is False:
        out.set(("precision", "precision"), "32", "bf16 false" + (" and fp16 false" if fp16 is False else ""))
    else:
        raise ImportRefused(doc.locate(("bf16",)), "bf16", bf16, ["true", "false", "auto"], TOOL)


def _attention(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    """attn_implementation flash_attention_2 / sdpa (or flash_attention: true) is ftc's fused attention kernels."""
    fast = value in FAST_ATTENTION
    out.set(("precision", "use_fast_kernels"), fast, origin)


def _flash_attention(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    if "attn_implementation" not in data:
        out.set(("precision", "use_fast_kernels"), typed_value(doc, (origin,), value, bool), origin)


def _gradient_checkpointing(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    """true or false; Axolotl's offload variants checkpoint too, without the offload."""
    if value in ("offload", "offload_disk"):
        out.warnings.append(f"{doc.file}: gradient_checkpointing {value}: ftc checkpoints without offloading")
        value = True
    out.set(("precision", "gradient_checkpointing"), typed_value(doc, (origin,), value, bool), origin)


def _torch_compile(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    if value == "auto":
        out.skip(origin, value, "ftc compiles only when precision.torch_compile is true")
    else:
        out.set(("precision", "torch_compile"), typed_value(doc, (origin,), value, bool), origin)


def _deepspeed(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    """A DeepSpeed JSON path is ftc's own-file DeepSpeed, checked by `ftc lint`; an inline config is not imported."""
    if isinstance(value, dict):
        out.skip(origin, value, "ftc reads a DeepSpeed JSON file; save the config to a file and name it")
        return
    out.set(("deepspeed", "apply_deepspeed"), True, f"{origin} is given")
    out.set(("deepspeed", "deepspeed"), typed_value(doc, (origin,), value, str), origin)


def _fsdp_config(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    """fsdp_config turns FSDP on; its offload, resharding, state dict and checkpointing keys map one to one."""
    config = typed_value(doc, (origin,), value, dict)
    out.set(("fsdp", "enable_fsdp"), True, f"{origin} is given")
    for name, item in config.items():
        key, mapped = FSDP_KEYS.get(name.removeprefix("fsdp_"), (None, None))
        if key is None or mapped is None:
            out.skip(f"{origin}.{name}", item, "no ftc equivalent")
        else:
            value = typed_value(doc, (origin, name), item, bool) if mapped is bool else mapped(item)
            out.set(("fsdp", key), value, f"{origin}.{name}")


SHARDED = "SHARDED_STATE_DICT"
# fsdp_config name (with or without its fsdp_ prefix) -> (ftc fsdp field, the value as ftc's).
FSDP_KEYS: dict[str, tuple[str, Any]] = {
    "offload_params": ("fsdp_cpu_offload", bool),
    "cpu_ram_efficient_loading": ("low_cpu_fsdp", bool),
    "activation_checkpointing": ("fsdp_activation_checkpointing", bool),
    "reshard_after_forward": ("sharding_strategy", lambda on: "FULL_SHARD" if on else "SHARD_GRAD_OP"),
    "sharding_strategy": ("sharding_strategy", lambda name: str(name).upper()),
    "state_dict_type": ("checkpoint_type", lambda kind: "FULL_STATE_DICT" if kind == "FULL_STATE_DICT" else SHARDED),
}


def _fsdp_list(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    """The deprecated `fsdp: [full_shard, auto_wrap]` list: full_shard or shard_grad_op turns FSDP on."""
    options = typed_value(doc, (origin,), value, list)
    strategies = {"full_shard": "FULL_SHARD", "shard_grad_op": "SHARD_GRAD_OP", "no_shard": "NO_SHARD"}
    chosen = [strategies[item] for item in options if item in strategies]
    if not chosen:
        out.skip(origin, value, "names no sharding strategy (full_shard, shard_grad_op, no_shard)")
        return
    config = data.get("fsdp_config") if isinstance(data.get("fsdp_config"), dict) else {}
    given = {FSDP_KEYS.get(str(name).removeprefix("fsdp_"), ("",))[0] for name in config}
    if "fsdp_config" not in data:
        out.set(("fsdp", "enable_fsdp"), True, f"{origin} is given")
    if "sharding_strategy" not in given:
        out.set(("fsdp", "sharding_strategy"), chosen[0], origin)
    if "offload" in options and "fsdp_cpu_offload" not in given:
        out.set(("fsdp", "fsdp_cpu_offload"), True, f"{origin} offload")


def _early_stopping(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    out.set(("early_stopping", "apply_early_stopping"), True, f"{origin} is given")
    out.set(("early_stopping", "early_stopping_patience"), typed_value(doc, (origin,), value, int), origin)


def _logging_steps(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    out.set(("tracking", "logging_strategy"), "steps", f"{origin} is given")
    out.set(("tracking", "logging_steps"), typed_value(doc, (origin,), value, int), origin)


def _wandb(doc: SourceDoc, data: dict[str, Any], out: Imported, value: Any, origin: str) -> None:
    """wandb_project turns W&B on, as Axolotl does; entity and mode go with it, other wandb_* keys are skipped."""
    fields = {"wandb_project": "project", "wandb_entity": "entity", "wandb_mode": "mode"}
    if origin not in fields:
        out.skip(origin, value, "ftc sets no other W&B option")
    elif "wandb_project" in data:
        if origin == "wandb_project":
            out.set(("tracking", "use_wandb"), True, "wandb_project is given")
        out.set(("tracking", "wandb_config", fields[origin]), typed_value(doc, (origin,), value, str), origin)
    else:
        out.skip(origin, value, "Axolotl logs to W&B only when wandb_project is given")


HANDLERS = {
    "datasets": _datasets,
    "sample_packing": _sample_packing,
    "num_epochs": _num_epochs,
    "lr_scheduler": _lr_scheduler,
    "optimizer": _optimizer,
    "attn_implementation": _attention,
    "flash_attention": _flash_attention,
    "gradient_checkpointing": _gradient_checkpointing,
    "torch_compile": _torch_compile,
    "deepspeed": _deepspeed,
    "fsdp_config": _fsdp_config,
    "fsdp": _fsdp_list,
    "early_stopping_patience": _early_stopping,
    "logging_steps": _logging_steps,
    **{name: _wandb for name in ("wandb_project", "wandb_entity", "wandb_mode", "wandb_name", "wandb_watch",
                                  "wandb_log_model", "wandb_run_id")},
}
HANDLED_ELSEWHERE = ("bf16", "fp16", "load_in_4bit", "load_in_8bit", "val_set_size", "eval_strategy",
                     "evals_per_epoch", "eval_steps")


def _defaults(doc: SourceDoc, data: dict[str, Any], out: Imported) -> None:
    """Axolotl's defaults that differ from ftc's, for the names the file leaves out; precision and evaluation."""
    for name, value in DEFAULTS.items():
        if name not in data:
            _convert_key(doc, data, out, name, value, f"{DEFAULT} {name}: {json.dumps(value)}")
    if "sample_packing" not in data:
        out.set(("data", "batching_strategy"), "padding", f"{DEFAULT} sample_packing: false")
    if "bf16" in data or "fp16" in data:
        _precision(doc, data, out)
    keys = {setting.key for setting in out.settings}
    if ("fsdp", "enable_fsdp") in keys and ("fsdp", "fsdp_activation_checkpointing") not in keys:
        origin = f"{DEFAULT} fsdp_config.activation_checkpointing: null (gradient_checkpointing decides)"
        out.set(("fsdp", "fsdp_activation_checkpointing"), False, origin)
    _evaluation(doc, data, out)


def _evaluation(doc: SourceDoc, data: dict[str, Any], out: Imported) -> None:
    """val_set_size splits the training data; 0 (Axolotl's default) or eval_strategy no evaluates nothing;
    evals_per_epoch N evaluates every 1/N of an epoch and an integer eval_steps every that many steps."""
    ratio = typed_value(doc, ("val_set_size",), data.get("val_set_size", 0.0), float)
    origin = "val_set_size" if "val_set_size" in data else f"{DEFAULT} val_set_size: 0.0"
    if ratio == 0 or data.get("eval_strategy") == "no":
        out.set(("evaluation", "evaluation_strategy"), "no", origin if ratio == 0 else "eval_strategy")
        return
    if not 0 < ratio < 1:
        raise ImportFailed(doc.locate(("val_set_size",)), "val_set_size", f"{ratio}: ftc splits a fraction below 1")
    out.set(("data", "validation_split_ratio"), ratio, origin)
    if "evals_per_epoch" in data:
        per_epoch = typed_value(doc, ("evals_per_epoch",), data["evals_per_epoch"], int)
        out.set(("evaluation", "evaluation_strategy"), "steps", "evals_per_epoch")
        out.set(("evaluation", "evaluation_steps_interval"), 1 / per_epoch, f"1 / evals_per_epoch {per_epoch}")
    elif isinstance(data.get("eval_steps"), int) and not isinstance(data["eval_steps"], bool):
        out.set(("evaluation", "evaluation_strategy"), "steps", "eval_steps")
        out.set(("evaluation", "eval_steps"), data["eval_steps"], "eval_steps")
    elif "eval_steps" in data:
        out.skip("eval_steps", data["eval_steps"], "a fraction of all steps; ftc evaluates each epoch")


IMPORTER = AxolotlImporter()
