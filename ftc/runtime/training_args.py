"""What this machine can train, and the spec as transformers 5's TrainingArguments.

Checks before any loading (`use_cuda`, `check_supported`: refusals with the lint rule's message),
precision (`auto_precision`, `precision_flags`), and the mapping of the spec onto TrainingArguments
(`training_arguments_kwargs`, `build_training_arguments`): schedule, evaluation and checkpoint cadence,
DeepSpeed and FSDP. No I/O but the package checks.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from ftc.contract import MODEL_FOLDER, ORT_UNAVAILABLE
from ftc.runtime import fsdp, zero
from ftc.runtime.config import RunConfig
from ftc.runtime.errors import RuntimeUserError
from ftc.spec.sections import LOWER_IS_BETTER

OPTIM_ALIASES = {"adamw_hf": "adamw_torch"}  # transformers 5 removed adamw_hf
_NO_EVAL = "no"


# --------------------------------------------------------------------------- checks


def use_cuda(cfg: RunConfig) -> bool:
    """Whether training runs on GPUs: resources.device, and whether CUDA is there."""
    import torch

    device = cfg.spec.resources.device
    available = torch.cuda.is_available()
    if device == "gpu" and not available:
        raise RuntimeUserError("resources.device is gpu but no CUDA GPU is available (the slurm target compiles device auto as gpu); set resources.device: cpu to train on CPU")
    return device != "cpu" and available


def check_supported(cfg: RunConfig, cuda: bool) -> None:
    """Refuse, before any loading, what the runtime cannot do; log what it ignores."""
    s = cfg.spec
    if s.ort.apply_ort:  # never a silent no-op; the message is lint rule FTC107's (a test keeps them equal)
        raise RuntimeUserError(f"ort.apply_ort: {ORT_UNAVAILABLE}")
    if s.fsdp.enable_fsdp:
        fsdp.check_supported(cfg, cuda)
    if s.precision.quantization:
        check_quantization(cfg, cuda)
    if s.deepspeed.apply_deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise RuntimeUserError("deepspeed.apply_deepspeed needs the deepspeed package: pip install deepspeed")
    precision_flags(s.precision.precision, cuda)  # raises for fp16 on CPU
    if s.tracking.flop_counter and s.tracking.use_profiler:  # lint FTC104
        raise RuntimeUserError("tracking.use_profiler cannot be used with flop_counter; turn one of them off")
    from ftc.runtime.tracking import check_wandb

    check_wandb(cfg)  # use_wandb without the wandb package


def check_quantization(cfg: RunConfig, cuda: bool) -> None:
    """QLoRA needs a CUDA GPU, bitsandbytes and an adapter to train (lint rules FTC116 and others)."""
    q = cfg.spec.precision.quantization
    if not cuda:
        raise RuntimeUserError(f"precision.quantization {q} needs a CUDA GPU (bitsandbytes); remove it to train on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeUserError(f"precision.quantization {q} needs the bitsandbytes package: pip install bitsandbytes")
    if not (cfg.spec.lora.apply_lora or cfg.spec.lora.from_peft_checkpoint):
        raise RuntimeUserError(f"precision.quantization {q} trains an adapter only; set lora.apply_lora: true")


def auto_precision(cuda: bool) -> tuple[str, str]:
    """What precision auto means here, and why: bf16 on GPUs that have it, fp16 on older ones, 32-bit on CPU."""
    import torch

    if not cuda:
        return "32", "training on CPU"
    if torch.cuda.is_bf16_supported():
        return "bf16", "GPU supports bf16"
    return "fp16", "GPU has no bf16"


def precision_flags(precision: str, cuda: bool) -> dict[str, bool]:
    """TrainingArguments bf16/fp16 for precision auto, 32, 16, bf16, fp16."""
    import torch

    if precision == "auto":
        precision = auto_precision(cuda)[0]
    bf16_ok = not cuda or torch.cuda.is_bf16_supported()
    if precision == "32":
        return {}
    if precision == "16":
        return {"bf16": True} if bf16_ok else {"fp16": True}
    if precision == "bf16":
        if not bf16_ok:
            raise RuntimeUserError("precision bf16: this GPU does not support bf16; use precision 16 or fp16")
        return {"bf16": True}
    if precision == "fp16":
        if not cuda:
            raise RuntimeUserError("precision fp16 needs a CUDA GPU; on CPU use precision bf16 (or 16, which picks bf16)")
        return {"fp16": True}
    raise RuntimeUserError(f"unknown precision {precision!r}")


# --------------------------------------------------------------------------- TrainingArguments


def optimizer_name(cfg: RunConfig, cuda: bool) -> str:
    """The Trainer's optim: the spec's (adamw_hf is adamw_torch), fused AdamW on CUDA where causal_lm's default stands."""
    if cuda and cfg.derived.get("optim_fused_on_cuda"):
        return "adamw_torch_fused"
    optim = cfg.spec.optimizer.optim
    return OPTIM_ALIASES.get(optim, optim)


def steps_per_epoch(cfg: RunConfig, n_train: int, world_size: int = 1) -> int:
    """Optimizer updates per epoch, as the Trainer counts them."""
    tr = cfg.spec.training
    batches = math.ceil(n_train / (tr.per_device_train_batch_size * max(1, world_size)))
    return max(1, math.ceil(batches / tr.gradient_accumulation_steps))


def rows_of_max_steps(cfg: RunConfig, world_size: int = 1) -> int:
    """The training rows max_steps consume: the row count of a streamed dataset, which has no length."""
    tr = cfg.spec.training
    return tr.max_steps * tr.per_device_train_batch_size * max(1, world_size) * tr.gradient_accumulation_steps


def num_epochs(cfg: RunConfig, per_epoch: int) -> int:
    """num_train_epochs, or enough epochs for min_update_steps (Anyscale) when the compiler derived so."""
    tr = cfg.spec.training
    if cfg.derived.get("epochs_from_min_update_steps") and tr.min_update_steps:
        return max(1, math.ceil(tr.min_update_steps / per_epoch))
    return tr.num_train_epochs


def checkpoint_cadence(cfg: RunConfig, per_epoch: int) -> int | None:
    """Steps between evaluation + checkpoint events of Anyscale's checkpoint_every_n_epochs or
    max_num_checkpoints (spread evenly: every total // max_num_checkpoints steps); None when neither is set."""
    ck, tr = cfg.spec.checkpointing, cfg.spec.training
    if ck.checkpoint_every_n_epochs:
        return ck.checkpoint_every_n_epochs * per_epoch
    if ck.max_num_checkpoints:
        total = tr.max_steps if tr.max_steps > 0 else num_epochs(cfg, per_epoch) * per_epoch
        return max(1, total // ck.max_num_checkpoints)
    return None


def evaluation_schedule(cfg: RunConfig, per_epoch: int, has_eval: bool) -> tuple[str, int]:
    """(eval strategy, eval steps): the spec's, or Anyscale's checkpoint_every_n_epochs / max_num_checkpoints."""
    ev = cfg.spec.evaluation
    if not has_eval:
        return _NO_EVAL, ev.eval_steps
    strategy, steps = ev.evaluation_strategy, ev.eval_steps
    cadence = checkpoint_cadence(cfg, per_epoch)
    if cadence is not None:
        return "steps", cadence
    if strategy == "steps" and ev.evaluation_steps_interval > 0:
        steps = max(1, round(ev.evaluation_steps_interval * per_epoch))
    return strategy, steps


def training_arguments_kwargs(
    cfg: RunConfig, n_train: int, has_eval: bool, cuda: bool, world_size: int = 1
) -> dict[str, Any]:
    """Keyword arguments of transformers 5's TrainingArguments for this spec (no I/O)."""
    s = cfg.spec
    tr, opt, ev, ck, es, tk = s.training, s.optimizer, s.evaluation, s.checkpointing, s.early_stopping, s.tracking
    per_epoch = steps_per_epoch(cfg, n_train, world_size)
    strategy, eval_steps = evaluation_schedule(cfg, per_epoch, has_eval)
    evaluating = strategy != _NO_EVAL
    if es.apply_early_stopping and not evaluating:
        raise RuntimeUserError(
            "early_stopping.apply_early_stopping needs evaluation during training; set evaluation_strategy to epoch or steps"
        )
    kwargs: dict[str, Any] = {
        "output_dir": str(cfg.output_dir / MODEL_FOLDER),
        "num_train_epochs": num_epochs(cfg, per_epoch),
        "max_steps": tr.max_steps if tr.max_steps > 0 else -1,
        "per_device_train_batch_size": tr.per_device_train_batch_size,
        "per_device_eval_batch_size": tr.per_device_eval_batch_size,
        "gradient_accumulation_steps": tr.gradient_accumulation_steps,
        "auto_find_batch_size": tr.auto_find_batch_size,
        "seed": tr.seed,
        "full_determinism": tr.enable_full_determinism,
        "dataloader_num_workers": tr.dataloader_num_workers,
        "max_grad_norm": tr.max_grad_norm if tr.gradient_clipping else 0.0,
        "optim": optimizer_name(cfg, cuda),
        "learning_rate": opt.learning_rate,
        "weight_decay": opt.weight_decay,
        "adam_beta1": opt.adam_beta1,
        "adam_beta2": opt.adam_beta2,
        "adam_epsilon": opt.adam_epsilon,
        # "step" is built by FtcTrainer.create_scheduler; the Trainer gets a placeholder.
        "lr_scheduler_type": "constant" if opt.lr_scheduler_type == "step" else opt.lr_scheduler_type,
        "warmup_steps": opt.warmup_steps,
        "eval_strategy": strategy,
        "save_strategy": strategy,
        "save_total_limit": ck.save_total_limit if ck.save_total_limit > 0 else None,
        "load_best_model_at_end": evaluating,
        "metric_for_best_model": f"eval_{ev.metric_for_best_model}",
        "greater_is_better": bool(cfg.derived.get("metric_greater_is_better", ev.metric_for_best_model not in LOWER_IS_BETTER)),
        "logging_strategy": tk.logging_strategy,
        "logging_steps": tk.logging_steps,
        "eval_accumulation_steps": ev.eval_accumulation_steps
        if ev.eval_accumulation_steps and ev.eval_accumulation_steps > 0
        else None,
        "report_to": "none",
        "disable_tqdm": False,
        "use_cpu": not cuda,
        **precision_flags(s.precision.precision, cuda),
    }
    kwargs.update(_step_cadence_kwargs(cfg, per_epoch, strategy, eval_steps))
    kwargs.update(_speed_and_sharding_kwargs(cfg))
    return kwargs


def _step_cadence_kwargs(cfg: RunConfig, per_epoch: int, strategy: str, eval_steps: int) -> dict[str, Any]:
    """eval_steps and save_steps of evaluation by steps; Anyscale's checkpoints without validation data: save only."""
    kwargs: dict[str, Any] = {}
    if strategy == "steps":
        kwargs["eval_steps"] = eval_steps
        kwargs["save_steps"] = eval_steps
    cadence = checkpoint_cadence(cfg, per_epoch)
    if strategy == _NO_EVAL and cadence is not None:
        kwargs["save_strategy"] = "steps"
        kwargs["save_steps"] = cadence
    return kwargs


def _speed_and_sharding_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """Activation checkpointing, torch.compile, DeepSpeed and FSDP arguments, where the spec asks for them."""
    s = cfg.spec
    kwargs: dict[str, Any] = {}
    if s.precision.gradient_checkpointing:
        kwargs["activation_checkpointing"] = True
    if s.precision.torch_compile:
        kwargs["torch_compile"] = True
    if s.deepspeed.apply_deepspeed:
        kwargs["deepspeed"] = zero.deepspeed_config(cfg)
    if s.fsdp.enable_fsdp:
        kwargs.update(fsdp.fsdp_arguments(cfg))
    return kwargs


def build_training_arguments(
    cfg: RunConfig, n_train: int, has_eval: bool, cuda: bool, world_size: int = 1, generation: dict[str, Any] | None = None
) -> Any:
    """TrainingArguments (Seq2SeqTrainingArguments for tasks that generate); invalid combinations are user errors."""
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    kwargs = training_arguments_kwargs(cfg, n_train, has_eval, cuda, world_size)
    try:
        if generation:  # seq2seq tasks: Prepared.generation (predict_with_generate, ...)
            return Seq2SeqTrainingArguments(**kwargs, **generation)
        return TrainingArguments(**kwargs)
    except ValueError as exc:
        raise RuntimeUserError(f"invalid training settings: {exc}") from None
