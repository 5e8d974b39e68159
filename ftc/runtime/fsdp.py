"""FSDP in the runtime: llama-recipes' fsdp_config mapped onto the Trainer's FSDP support.

transformers 5 runs FSDP through accelerate. FULL_SHARD and SHARD_GRAD_OP are FSDP2 (`fully_shard`,
resharding after the forward pass or not); NO_SHARD and HYBRID_SHARD exist only in FSDP1, which
the Trainer still runs with `fsdp_config["version"] = 1`. `checkpoint_type` is the format of the
checkpoints written during training; the final model is always gathered into one plain
transformers model (or adapter) that reloads without FSDP. `hsdp` is HYBRID_SHARD over the job's
nodes (shard within a node, replicate across nodes); other group sizes are refused, not dropped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftc.runtime.config import RunConfig
from ftc.runtime.errors import RuntimeUserError
from ftc.spec.rules import hsdp_problem

FSDP1_ONLY = ("NO_SHARD", "HYBRID_SHARD")


def fsdp_arguments(cfg: RunConfig) -> dict[str, Any]:
    """TrainingArguments `fsdp` and `fsdp_config` for the spec's fsdp section."""
    f = cfg.spec.fsdp
    config: dict[str, Any] = {
        "state_dict_type": f.checkpoint_type,
        "activation_checkpointing": f.fsdp_activation_checkpointing,
        "cpu_offload": f.fsdp_cpu_offload,
        "cpu_ram_efficient_loading": f.low_cpu_fsdp,
    }
    if f.sharding_strategy in FSDP1_ONLY:
        config.update(version=1, reshard_after_forward=f.sharding_strategy.lower(), use_orig_params=True)
    else:
        config.update(version=2, reshard_after_forward=f.sharding_strategy == "FULL_SHARD")
    return {"fsdp": True, "fsdp_config": config}


def check_supported(cfg: RunConfig, cuda: bool) -> None:
    """Refuse, before loading anything, the FSDP combinations the runtime cannot finish."""
    s = cfg.spec
    if s.fsdp.hsdp:
        check_hsdp_groups(cfg)
    if not cuda and s.fsdp.sharding_strategy in FSDP1_ONLY:
        raise RuntimeUserError(
            f"fsdp.sharding_strategy {s.fsdp.sharding_strategy} is FSDP1, which accelerate runs on GPUs only; "
            "on CPU use FULL_SHARD or SHARD_GRAD_OP"
        )
    if not cuda and s.fsdp.checkpoint_type == "FULL_STATE_DICT":
        raise RuntimeUserError(
            "fsdp.checkpoint_type FULL_STATE_DICT fails in CPU processes (accelerate's gathered tensors share freed "
            "storage); on CPU use SHARDED_STATE_DICT (the final model is gathered into one plain model either way)"
        )
    if s.fsdp.fsdp_optimizer == "anyprecision":
        raise RuntimeUserError("fsdp.fsdp_optimizer anyprecision needs torchdistx, which has no build for this torch; use AdamW")
    if (s.lora.apply_lora or s.lora.from_peft_checkpoint) and s.lora.merge_lora_weights and s.checkpointing.save_model:
        raise RuntimeUserError(
            "lora.merge_lora_weights cannot be used with fsdp.enable_fsdp (the adapter is sharded); "
            "set merge_lora_weights: false to save the adapter, and merge it after training"
        )


def check_hsdp_groups(cfg: RunConfig) -> None:
    """fsdp.hsdp runs as HYBRID_SHARD over this job's nodes; other group sizes are refused (lint rule FTC146)."""
    f = cfg.spec.fsdp
    if f.sharding_strategy != "HYBRID_SHARD":
        raise RuntimeUserError(f"fsdp.hsdp needs sharding_strategy: HYBRID_SHARD, not {f.sharding_strategy}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    problem = hsdp_problem(f.sharding_group_size, f.replica_group_size, max(1, world // per_node), per_node)
    if problem:
        raise RuntimeUserError(f"fsdp.hsdp: {problem}")


@contextlib.contextmanager
def on_cpu_processes(cuda: bool) -> Iterator[None]:
    """Let the Trainer's Accelerator run FSDP in CPU processes (gloo) too.

    accelerate turns its FSDP plugin on for accelerator devices only and silently trains CPU
    processes with plain DDP; torch's FSDP itself runs on CPU. While the Trainer is built, an
    Accelerator state of several CPU processes that was given the FSDP plugin takes it.
    """
    if cuda:
        yield
        return
    from accelerate import state
    from accelerate.utils import DistributedType

    original = state.AcceleratorState.__init__

    def init(self: Any, *args: Any, fsdp_plugin: Any = None, **kwargs: Any) -> None:
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    state.AcceleratorState.__init__ = init
    try:
        yield
    finally:
        state.AcceleratorState.__init__ = original


def prepare_checkpoint_folder(trainer: Any, output_dir: str | None) -> None:
    """Create a checkpoint's folder on every rank before the Trainer saves into it.

    With a sharded state dict the Trainer writes the weights only after each rank has checked
    whether the best checkpoint's folder exists: ranks that disagree never meet again (rank 0
    loads the best model at the end, the others do not)."""
    if output_dir and getattr(trainer, "is_fsdp_enabled", False):
        os.makedirs(output_dir, exist_ok=True)


def save_final_model(trainer: Any, folder: Path) -> str:
    """Gather the whole model from every rank and save it with plain transformers (peft for an
    adapter) and the tokenizer on rank 0; every rank must call it. Returns what was saved: "model" or "adapter"."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )

    from ftc.runtime.lora import is_peft

    model = trainer.model
    # FSDP1 and FSDP2 alike: the whole tensors, in CPU memory, on rank 0 (the others get none)
    state_dict = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if trainer.is_world_process_zero():
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(folder), state_dict=state_dict)
        if trainer.processing_class is not None:
            trainer.processing_class.save_pretrained(str(folder))
    trainer.accelerator.wait_for_everyone()
    return "adapter" if is_peft(model) else "model"
