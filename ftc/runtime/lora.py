"""Parameter-efficient finetuning with peft: LoRA (and prefix tuning / llama-adapter), and saving.

The default `target_modules` of a model family come from peft's own table where it has one,
else from `FALLBACK_TARGET_MODULES`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ftc.runtime.config import RunConfig
from ftc.runtime.errors import RuntimeUserError

log = logging.getLogger("ftc.runtime")

# Attention projections LoRA adapts by default, per model_type, where peft has no entry.
FALLBACK_TARGET_MODULES: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "distilbert": ["q_lin", "v_lin"],
    "camembert": ["query", "value"],
    "gpt2": ["c_attn"],
    "t5": ["q", "v"],
    "bart": ["q_proj", "v_proj"],
    "mbart": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
}


def default_target_modules(model_type: str) -> list[str] | None:
    """peft's default LoRA targets for a model family, else ours; None when neither knows it."""
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as peft_defaults
    except ImportError:  # older or newer peft without the table
        peft_defaults = {}
    found = peft_defaults.get(model_type)
    if found:
        return list(found)
    fallback = FALLBACK_TARGET_MODULES.get(model_type)
    return list(fallback) if fallback else None


def peft_config(cfg: RunConfig, model_type: str, task_type: str) -> Any:
    """The peft config of lora.peft_method for this model and task (task_type: SEQ_CLS, CAUSAL_LM, ...)."""
    from peft import AdaptionPromptConfig, LoraConfig, PrefixTuningConfig

    lo = cfg.spec.lora
    if lo.peft_method == "prefix":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=lo.num_virtual_tokens)
    if lo.peft_method == "llama_adapter":
        if task_type != "CAUSAL_LM":
            raise RuntimeUserError(
                f"lora.peft_method llama_adapter works for causal_lm only, not {cfg.task}; use lora or prefix"
            )
        return AdaptionPromptConfig(
            task_type=task_type, adapter_len=lo.adapter_len, adapter_layers=lo.adapter_layers
        )
    targets = lo.target_modules or default_target_modules(model_type)
    if not targets:
        raise RuntimeUserError(
            f"no default LoRA target_modules for model type {model_type!r}; set lora.target_modules "
            "(e.g. [q_proj, v_proj])"
        )
    return LoraConfig(
        task_type=task_type,
        r=lo.lora_r,
        lora_alpha=lo.lora_alpha,
        lora_dropout=lo.lora_dropout,
        target_modules=targets,
        modules_to_save=list(lo.modules_to_save) or None,
        bias=lo.bias,
        fan_in_fan_out=lo.fan_in_fan_out,
        init_lora_weights=lo.init_lora_weights,
    )


def apply_peft(model: Any, cfg: RunConfig, task_type: str) -> Any:
    """Wrap `model` for PEFT training: fresh adapters, or those of lora.from_peft_checkpoint."""
    from peft import PeftModel, get_peft_model

    start = cfg.path("lora", "from_peft_checkpoint")
    if start is not None:
        if not (start / "adapter_config.json").exists():
            raise RuntimeUserError(f"lora.from_peft_checkpoint {start} holds no adapter (adapter_config.json)")
        log.info("starting from the adapter in %s", start)
        return PeftModel.from_pretrained(model, str(start), is_trainable=True)
    if cfg.spec.precision.quantization:  # QLoRA: norms in float32, inputs that carry gradients
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.spec.precision.gradient_checkpointing)
    config = peft_config(cfg, getattr(model.config, "model_type", ""), task_type)
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:  # e.g. target modules not found in the model
        hint = ""
        targets = getattr(config, "target_modules", None)
        if targets:  # peft's message does not say which names it looked for, nor which there are
            hint = (
                f" (lora.target_modules: {', '.join(sorted(targets))}; the linear layers of this "
                f"{getattr(model.config, 'model_type', '?')} model: {', '.join(linear_layer_names(model)) or 'none'})"
            )
        raise RuntimeUserError(f"cannot apply {cfg.spec.lora.peft_method}: {exc}{hint}") from None
    if cfg.spec.lora.peft_method == "prefix" and not _takes_past_key_values(peft_model):
        raise RuntimeUserError(
            f"lora.peft_method prefix needs a model that takes past_key_values, and model type "
            f"{getattr(model.config, 'model_type', '?')!r} does not; use peft_method lora"
        )
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info(
        "%s: %s of %s parameters trainable (%.2f%%)",
        cfg.spec.lora.peft_method, f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1),
    )
    return peft_model


def linear_layer_names(model: Any) -> list[str]:
    """The distinct last name parts of the model's linear layers (what lora.target_modules may name)."""
    import torch

    kinds: tuple[type, ...] = (torch.nn.Linear,)
    try:  # GPT-2's attention and MLP layers
        from transformers.pytorch_utils import Conv1D

        kinds += (Conv1D,)
    except ImportError:
        pass
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if name and isinstance(m, kinds)})


def _takes_past_key_values(peft_model: Any) -> bool:
    """What peft checks only at the first forward pass of a prefix-tuned model."""
    import inspect

    base = peft_model.base_model
    if "past_key_values" in inspect.signature(base.forward).parameters:
        return True
    name = getattr(peft_model, "transformer_backbone_name", None)
    if not name:
        return False
    backbone = base.get_submodule(name)
    return "past_key_values" in inspect.signature(backbone.forward).parameters


def is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def save_final_model(model: Any, folder: Path, merge: bool) -> str:
    """Save the trained model to `folder`: merged into a full model, or the adapter only.

    Returns what was saved: "model", "merged" or "adapter".
    """
    folder.mkdir(parents=True, exist_ok=True)
    if not is_peft(model):
        model.save_pretrained(str(folder))
        return "model"
    if merge and hasattr(model, "merge_and_unload"):
        try:
            merged = model.merge_and_unload()
        except (AttributeError, ValueError, NotImplementedError) as exc:  # prefix tuning cannot merge
            log.warning("cannot merge the adapter (%s); saving the adapter only", exc)
        else:
            merged.save_pretrained(str(folder))
            return "merged"
    # No config.json next to the adapter: transformers would then take the folder for a full model
    # instead of loading base + adapter. The labels are in ftc_model_info.json.
    model.save_pretrained(str(folder))
    return "adapter"
