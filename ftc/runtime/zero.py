"""DeepSpeed ZeRO and DDP in the runtime: the default ZeRO config, a launcher-less process, and what
several processes change around training (the evaluation before train() must leave the model
unprepared, or DDP never wraps it; gathering shards to merge LoRA; loading on one rank).

The Trainer runs DeepSpeed itself (`TrainingArguments(deepspeed=...)`); these are the pieces it
does not handle for ftc's run: see each function.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from ftc.runtime.config import RunConfig
from ftc.runtime.errors import RuntimeUserError


def deepspeed_config(cfg: RunConfig) -> str | dict[str, Any]:
    """The user's DeepSpeed file, or a ZeRO config for deepspeed_stage with the HF "auto" values."""
    ds = cfg.spec.deepspeed
    path = cfg.path("deepspeed", "deepspeed")
    if path is not None:
        if not path.is_file():
            raise RuntimeUserError(f"deepspeed config file not found: {path}")
        return str(path)
    zero: dict[str, Any] = {"stage": int(ds.deepspeed_stage)}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if ds.offload_param and zero["stage"] == 3:
        zero["offload_param"] = {"device": "cpu"}
    # Bucket sizes "auto": transformers sizes them from the model's hidden size (DeepSpeed's own
    # defaults, 5e8 elements, let a bucket hold every gradient of a small model a second time).
    zero["reduce_bucket_size"] = "auto"
    if zero["stage"] == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        zero["stage3_prefetch_bucket_size"] = "auto"
        zero["stage3_param_persistence_threshold"] = "auto"
    return {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
    }


def deepspeed_env_defaults() -> None:
    """A single process without a launcher: the torch.distributed environment of a world of one.

    Without RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT DeepSpeed falls back to MPI discovery
    (and fails without mpi4py). Launchers (torchrun, deepspeed, Ray, srun wrappers) set them; only
    what is missing is filled in, and only when no launcher set RANK or WORLD_SIZE.
    """
    if "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a free port for the process group
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    defaults = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    for var, value in defaults.items():
        os.environ.setdefault(var, value)


def evaluate_before_training(trainer: Any) -> dict[str, float]:
    """`trainer.evaluate()` before `trainer.train()`, also under DeepSpeed and FSDP.

    transformers would otherwise shard the model for it: DeepSpeed starts an inference engine,
    which ZeRO-2 refuses ("ZeRO inference only makes sense with ZeRO Stage 3") and which train()
    would then reuse without an optimizer; FSDP2 refuses a model prepared without its optimizer.
    Before training every rank still holds the whole model (the runtime loads it before
    TrainingArguments exist, so it is not partitioned), so it is evaluated as a plain module (the
    ranks share the data as usual) and the Trainer is left as it was for train().
    """
    sharding = [flag for flag in ("is_deepspeed_enabled", "is_fsdp_enabled") if getattr(trainer, flag, False)]
    models = list(trainer.accelerator._models)
    for flag in sharding:
        setattr(trainer, flag, False)
    try:
        return trainer.evaluate()
    finally:
        for flag in sharding:
            setattr(trainer, flag, True)
        if sharding:
            trainer.accelerator._models[:] = models
            trainer.model_wrapped = trainer.model
            trainer.deepspeed = None
        _unprepare(trainer)


def _unprepare(trainer: Any) -> None:
    """Forget the evaluation's `accelerator.prepare_model(evaluation_mode=True)`: it marks the model
    prepared (`_is_accelerate_prepared`), and train() would then take it as it is, so several
    processes would train without DistributedDataParallel (no gradient all-reduce: each rank on its
    own share of the batches, rank 0 saving its own model)."""
    if getattr(trainer.model, "_is_accelerate_prepared", False):
        trainer.model._is_accelerate_prepared = False
    models = trainer.accelerator._models
    models[:] = [m for m in models if m is not trainer.model]


def gathered_parameters(trainer: Any) -> Any:
    """A context in which every parameter is whole under DeepSpeed ZeRO-3 (entered by every rank:
    it gathers the shards); a no-op otherwise."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not (getattr(trainer, "is_deepspeed_enabled", False) and is_deepspeed_zero3_enabled()):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(trainer.model.parameters()), modifier_rank=None)


@contextlib.contextmanager
def rank_zero_loading() -> Any:
    """Model loading by one rank alone under ZeRO-3 (the MLflow model reads pytorch_model_folder back).

    While the Trainer's DeepSpeed config is registered, transformers loads every model through
    deepspeed.zero.Init, whose collectives wait for the other ranks forever; the registration is
    lifted for the duration (the Trainer's own state keeps the stage)."""
    from transformers.integrations import deepspeed as hf_ds

    saved = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = saved
