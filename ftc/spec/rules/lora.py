"""Rules on LoRA and PEFT, and on quantization (QLoRA)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ftc.spec.rules.facts import family_of, settings_without_switch
from ftc.spec.rules.registry import KeyPath, rule

if TYPE_CHECKING:
    from ftc.spec.resolved import Resolved


_LORA_FAMILIES = {
    "gpt2", "bert", "roberta", "deberta", "deberta-v2", "distilbert", "t5", "mt5", "bart", "mbart", "camembert",
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "falcon", "phi3", "gemma", "gemma2",
}  # fmt: skip
_QUANTIZATION_FAMILIES = {"llama", "falcon", "mixtral", "gpt_oss"}


@rule("FTC102", "warning", "LoRA settings without LoRA")
def _lora_settings_without_lora(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """LoRA settings such as merge_lora_weights or lora_r have no effect unless apply_lora is true."""
    for name in settings_without_switch(r, "lora", "apply_lora"):
        yield ("lora", name), "has no effect because lora.apply_lora is false; set apply_lora: true or remove it"


@rule("FTC115", "error", "unsupported PEFT combination")
def _peft_method(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """llama_adapter cannot be used with FSDP; prefix tuning is not supported (llama-recipes raises)."""
    lora = r.spec.lora
    if not lora.apply_lora:
        return
    if lora.peft_method == "prefix":
        yield ("lora", "peft_method"), "prefix is not supported (llama-recipes raises); use lora"
    if lora.peft_method == "llama_adapter" and r.spec.fsdp.enable_fsdp:
        yield ("lora", "peft_method"), "llama_adapter cannot be used with FSDP; use lora or turn enable_fsdp off"


@rule("FTC116", "error", "quantization limits")
def _quantization(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """QLoRA (4bit/8bit) needs a GPU (bitsandbytes), cannot use DeepSpeed, and 8bit cannot use FSDP."""
    q = r.spec.precision.quantization
    if q is None:
        return
    if r.spec.resources.device == "cpu":
        yield ("precision", "quantization"), "needs a GPU (bitsandbytes); set resources.device to gpu or remove it"
    if r.spec.deepspeed.apply_deepspeed:
        yield ("precision", "quantization"), "cannot be used with DeepSpeed (Azure ML disables it); choose one"
    if q == "8bit" and r.spec.fsdp.enable_fsdp:
        yield ("precision", "quantization"), "8bit cannot be used with FSDP (llama-recipes); use 4bit or no FSDP"


@rule("FTC125", "warning", "LoRA on a family without default target modules")
def _lora_family(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Without target_modules, LoRA needs a model family with known defaults (the Azure ML families and llama-likes)."""
    s = r.spec
    if not s.lora.apply_lora or s.lora.target_modules:
        return
    family = family_of(r)
    if family and family not in _LORA_FAMILIES:
        yield ("lora", "apply_lora"), f"model family {family!r} has no default target_modules; set lora.target_modules"


@rule("FTC126", "warning", "Mixtral without LoRA")
def _mixtral_full(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Mixture-of-experts models are finetuned with LoRA only (Anyscale)."""
    if family_of(r) == "mixtral" and not r.spec.lora.apply_lora:
        yield ("lora", "apply_lora"), "Mixtral is finetuned with LoRA only; set apply_lora: true"


@rule("FTC129", "error", "quantization on an unsupported model family")
def _quantization_family(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """QLoRA (4bit/8bit) works only for the llama, falcon, mixtral and gpt_oss families (Azure ML; checked when
    the model is local)."""
    family = family_of(r)
    if r.spec.precision.quantization and family and family not in _QUANTIZATION_FAMILIES:
        yield (
            ("precision", "quantization"),
            f"is not supported for model family {family!r} (only {', '.join(sorted(_QUANTIZATION_FAMILIES))}); remove it",
        )


@rule("FTC140", "error", "quantization without LoRA")
def _quantization_without_lora(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """QLoRA trains an adapter on the quantized model: quantization turns apply_lora on unless the spec sets it
    false, which the runtime refuses."""
    lora = r.spec.lora
    if r.spec.precision.quantization and not (lora.apply_lora or lora.from_peft_checkpoint):
        yield ("lora", "apply_lora"), "is false but precision.quantization trains an adapter only; set apply_lora: true"
