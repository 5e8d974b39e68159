"""Rules on DeepSpeed: its switches, ZeRO-3 limits, and the user's DeepSpeed config file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ftc.spec import deepspeed_file
from ftc.spec.peek import local_path, read_json
from ftc.spec.rules.facts import family_of, given
from ftc.spec.rules.registry import KeyPath, rule

if TYPE_CHECKING:
    from ftc.spec.resolved import Resolved


_ZERO3_LORA_FAMILIES = {"llama", "falcon", "mistral", "mixtral", "phi3"}
_ZERO3_FAILS = {"phi", "mixformer-sequential"}  # Phi-1/1.5/2: "mixformer-sequential" before transformers named it phi


@rule("FTC103", "warning", "DeepSpeed file without apply_deepspeed")
def _deepspeed_file_ignored(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """A deepspeed config file is ignored unless apply_deepspeed is true (Azure ML finetune.py)."""
    ds = r.spec.deepspeed
    if ds.deepspeed and not ds.apply_deepspeed:
        yield ("deepspeed", "deepspeed"), "is ignored because apply_deepspeed is false; set apply_deepspeed: true"


@rule("FTC110", "error", "DeepSpeed with auto_find_batch_size")
def _deepspeed_auto_batch(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """DeepSpeed fixes the batch size in its config, so auto_find_batch_size cannot change it (Azure ML)."""
    if r.spec.deepspeed.apply_deepspeed and r.spec.training.auto_find_batch_size:
        yield ("training", "auto_find_batch_size"), "cannot be used with apply_deepspeed; set it to false"


@rule("FTC112", "error", "DeepSpeed with FSDP")
def _deepspeed_with_fsdp(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """DeepSpeed and FSDP both shard the model; choose one."""
    if r.spec.deepspeed.apply_deepspeed and r.spec.fsdp.enable_fsdp:
        yield ("fsdp", "enable_fsdp"), "cannot be used with deepspeed.apply_deepspeed; choose one"


@rule("FTC124", "error", "ZeRO-3 with LoRA")
def _zero3_lora(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """ZeRO-3 with LoRA works only for causal LMs of the llama, mistral, mixtral, falcon and phi3 families (Azure ML)."""
    s = r.spec
    if not (_zero_stage(r) == "3" and s.lora.apply_lora):
        return
    family = family_of(r)
    if s.task != "causal_lm" or (family and family not in _ZERO3_LORA_FAMILIES):
        yield (
            ("deepspeed", "deepspeed_stage"),
            f"ZeRO-3 with LoRA is not supported for {s.task}" + (f" on {family}" if family else "") + "; use stage 2",
        )


@rule("FTC127", "warning", "default DeepSpeed settings with a DeepSpeed file")
def _deepspeed_defaults_ignored(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """deepspeed_stage, offload_optimizer and offload_param shape only the default ZeRO config, so they are ignored
    when a deepspeed file is given (Azure ML)."""
    if not r.spec.deepspeed.deepspeed:
        return
    for name in ("deepspeed_stage", "offload_optimizer", "offload_param"):
        if given(r, f"deepspeed.{name}"):
            yield ("deepspeed", name), "is ignored because deepspeed names a config file; set it in that file or remove it"


@rule("FTC128", "error", "ZeRO-3 on a Phi (mixformer) model")
def _zero3_phi(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """DeepSpeed ZeRO-3 fails on Phi (mixformer) models (Azure ML); phi3 works (checked when the model is local)."""
    family = family_of(r)
    if family in _ZERO3_FAILS and _zero_stage(r) == "3":
        yield ("deepspeed", "apply_deepspeed"), f"ZeRO-3 fails on {family} (Phi) models; use ZeRO stage 2 or FSDP"


@rule("FTC150", "error", "DeepSpeed file that cannot be read")
def _deepspeed_file_unreadable(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The DeepSpeed config file must be a JSON object (checked when the file is reachable)."""
    yield from _deepspeed_findings(r, ("unreadable",))


@rule("FTC151", "error", "DeepSpeed value that disagrees with the Trainer's")
def _deepspeed_file_mismatch(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Values the Trainer also owns (micro batch, accumulation, train_batch_size = micro x accumulation x processes,
    gradient clipping, optimizer lr / betas / eps / weight decay, fp16 and bf16) must be "auto" or equal the
    spec's: transformers refuses a mismatch when training starts, and fp16 with bf16 both on is refused too."""
    yield from _deepspeed_findings(r, ("mismatch", "both_precisions"))


@rule("FTC152", "warning", "unknown top-level DeepSpeed key")
def _deepspeed_file_unknown_key(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """DeepSpeed silently ignores top-level keys it does not know (a typo such as zero_optimisation turns
    ZeRO off); the message suggests the nearest known key."""
    yield from _deepspeed_findings(r, ("unknown_key",))


@rule("FTC153", "error", "DeepSpeed file that DeepSpeed refuses")
def _deepspeed_file_refused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The file, with its "auto" values filled from the spec as transformers fills them, passes DeepSpeed's own
    config models (checked in a child process when deepspeed is installed, and only when FTC150-152 find nothing)."""
    yield from _deepspeed_findings(r, ("refused",), engine=True)


def _zero_stage(r: Resolved) -> str | None:
    """The ZeRO stage DeepSpeed runs: the config file's when one is given (None if unreadable), else deepspeed_stage."""
    ds = r.spec.deepspeed
    if not ds.apply_deepspeed:
        return None
    if not ds.deepspeed:
        return ds.deepspeed_stage
    path = local_path(r.doc.base_dir, ds.deepspeed)
    config = read_json(path) if path is not None else None
    zero = config.get("zero_optimization") if isinstance(config, dict) else None
    stage = zero.get("stage") if isinstance(zero, dict) else None
    return None if stage is None else str(stage)


def _deepspeed_file_problems(r: Resolved, engine: bool = False) -> tuple[Path, list[deepspeed_file.Problem]] | None:
    """The user's DeepSpeed file and its problems, when apply_deepspeed names one that is reachable."""
    ds = r.spec.deepspeed
    path = local_path(r.doc.base_dir, ds.deepspeed) if ds.apply_deepspeed else None
    if path is None:
        return None
    return path, deepspeed_file.problems(path, r.spec, int(r.derived["world_size"]), engine=engine)


def _deepspeed_findings(r: Resolved, kinds: tuple[str, ...], engine: bool = False) -> Iterator[tuple[KeyPath, str]]:
    found = _deepspeed_file_problems(r, engine)
    if found is None:
        return
    path, problems = found
    for p in problems:
        if p.kind in kinds:
            yield ("deepspeed", "deepspeed"), f"{p.where(path)}: {p.message}"
