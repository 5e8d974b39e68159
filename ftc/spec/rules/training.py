"""Rules on training, evaluation, tracking and precision settings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ftc.spec.rules.facts import given, most_train_steps
from ftc.spec.rules.registry import KeyPath, rule

if TYPE_CHECKING:
    from ftc.spec.resolved import Resolved


@rule("FTC101", "warning", "evaluation every N steps without N")
def _eval_steps_unset(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """evaluation_strategy: steps needs eval_steps or evaluation_steps_interval (Azure ML QA spec)."""
    if r.spec.evaluation.evaluation_strategy == "steps" and not (
        given(r, "evaluation.eval_steps") or given(r, "evaluation.evaluation_steps_interval")
    ):
        yield (
            ("evaluation", "evaluation_strategy"),
            "is steps but neither eval_steps nor evaluation_steps_interval is set; evaluating every 500 steps "
            "(set one of them)",
        )


@rule("FTC104", "error", "flop counter with profiler")
def _flop_counter_with_profiler(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """flop_counter and use_profiler cannot be used together (llama-recipes train_utils)."""
    t = r.spec.tracking
    if t.flop_counter and t.use_profiler:
        yield ("tracking", "use_profiler"), "cannot be used with flop_counter; turn one of them off"


@rule("FTC105", "warning", "warmup longer than training")
def _warmup_longer_than_training(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Warmup that lasts as long as training never reaches the peak learning rate. Without max_steps, the
    steps are counted from the training rows, batch size, processes and epochs (when the data is reachable)."""
    steps, warmup = r.spec.training.max_steps, r.spec.optimizer.warmup_steps
    if steps > 0 and warmup >= steps:
        yield (
            ("optimizer", "warmup_steps"),
            f"is {warmup} but training stops after max_steps={steps}; lower warmup_steps below max_steps",
        )
    elif steps <= 0 < warmup and (estimate := most_train_steps(r)) and warmup >= estimate[0]:
        total, rows, name = estimate
        yield (
            ("optimizer", "warmup_steps"),
            f"is {warmup} but {rows} rows of {name} make at most {total} training steps; lower warmup_steps",
        )


@rule("FTC107", "error", "ONNX Runtime training is unavailable")
def _ort_unavailable(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """apply_ort cannot run: ORTTrainer and ORTModule do not import with transformers 5 and torch 2.13."""
    if r.spec.ort.apply_ort:
        yield (
            ("ort", "apply_ort"),
            "ONNX Runtime training cannot run with transformers 5 / torch 2.13 (ORTTrainer no longer imports); "
            "set apply_ort: false and use precision: 16 or use_fast_kernels for speed",
        )


@rule("FTC108", "warning", "early-stopping settings without early stopping")
def _early_stopping_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """early_stopping_patience and early_stopping_threshold apply only if apply_early_stopping is true."""
    if r.spec.early_stopping.apply_early_stopping:
        return
    for name in ("early_stopping_patience", "early_stopping_threshold"):
        if given(r, f"early_stopping.{name}"):
            yield ("early_stopping", name), "has no effect because apply_early_stopping is false"


@rule("FTC109", "warning", "step interval with an epoch strategy")
def _steps_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """logging_steps applies only to logging_strategy steps, eval_steps only to evaluation_strategy steps."""
    if r.spec.tracking.logging_strategy != "steps" and given(r, "tracking.logging_steps"):
        yield ("tracking", "logging_steps"), "has no effect because logging_strategy is not steps"
    if r.spec.evaluation.evaluation_strategy != "steps":
        for name in ("eval_steps", "evaluation_steps_interval"):
            if given(r, f"evaluation.{name}"):
                yield ("evaluation", name), "has no effect because evaluation_strategy is not steps"


@rule("FTC111", "error", "early stopping without evaluation")
def _early_stopping_needs_eval(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Early stopping compares evaluations, so it needs evaluation_strategy epoch or steps."""
    if r.spec.early_stopping.apply_early_stopping and r.spec.evaluation.evaluation_strategy == "no":
        yield ("early_stopping", "apply_early_stopping"), "needs evaluation; set evaluation_strategy to epoch or steps"


@rule("FTC113", "error", "profiler window longer than training")
def _profiler_window(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The profiler waits 1, warms up 2 and records 3 steps, so it needs max_steps 0 (off) or at least 7."""
    steps = r.spec.training.max_steps
    if r.spec.tracking.use_profiler and 0 < steps < 7:
        yield ("tracking", "use_profiler"), f"needs at least 7 training steps but max_steps is {steps}"


@rule("FTC114", "error", "flop counter starts after training ends")
def _flop_counter_window(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The flop counter needs max_steps 0 (off) or more steps than flop_counter_start."""
    t, steps = r.spec.tracking, r.spec.training.max_steps
    if t.flop_counter and 0 < steps <= t.flop_counter_start:
        yield ("tracking", "flop_counter_start"), f"is {t.flop_counter_start} but training stops after {steps} steps"


@rule("FTC119", "warning", "fast attention kernels in 32-bit")
def _fast_kernels_fp32(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Flash attention needs 16-bit precision (Azure ML raises); in 32-bit (precision 32, or auto on CPU) only
    PyTorch SDPA is used."""
    p = r.spec.precision
    if p.use_fast_kernels and (p.precision == "32" or (p.precision == "auto" and r.spec.resources.device == "cpu")):
        yield ("precision", "use_fast_kernels"), "flash attention needs precision 16 or bf16; with 32 only SDPA is used"


@rule("FTC121", "warning", "min_update_steps with num_train_epochs")
def _min_update_steps_ignored(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """min_update_steps is used only when num_train_epochs is not given (Anyscale)."""
    if r.spec.training.min_update_steps is not None and given(r, "training.num_train_epochs"):
        yield ("training", "min_update_steps"), "is ignored because num_train_epochs is given; remove one"


@rule("FTC122", "error", "fp16 on CPU")
def _fp16_on_cpu(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """fp16 mixed precision needs a GPU; on CPU use bf16 (precision 16 picks bf16 there)."""
    if r.spec.precision.precision == "fp16" and r.spec.resources.device == "cpu":
        yield ("precision", "precision"), "fp16 needs a GPU; use bf16 or 16 on CPU"


@rule("FTC123", "warning", "best model without evaluation")
def _best_model_without_eval(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """metric_for_best_model chooses among evaluated checkpoints, so it needs evaluation."""
    if r.spec.evaluation.evaluation_strategy == "no" and given(r, "evaluation.metric_for_best_model"):
        yield ("evaluation", "metric_for_best_model"), "has no effect without evaluation; the last model is kept"


@rule("FTC141", "warning", "layer freezing that has no effect")
def _freeze_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """num_freeze_layers applies only with freeze_layers; freeze_layers has no effect with PEFT, which already
    freezes the whole base model (llama-recipes freezes layers only without PEFT)."""
    tr, lora = r.spec.training, r.spec.lora
    if not tr.freeze_layers:
        if given(r, "training.num_freeze_layers"):
            yield ("training", "num_freeze_layers"), "has no effect because freeze_layers is false"
    elif lora.apply_lora or lora.from_peft_checkpoint:
        yield ("training", "freeze_layers"), "has no effect with LoRA, which freezes the whole base model; remove it"


@rule("FTC143", "warning", "gradient clipping that does nothing")
def _clipping_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Clipping needs gradient_clipping true and max_grad_norm above 0 (llama-recipes)."""
    tr = r.spec.training
    if not tr.gradient_clipping and given(r, "training.max_grad_norm"):
        yield ("training", "max_grad_norm"), "has no effect because gradient_clipping is false"
    if tr.gradient_clipping and tr.max_grad_norm == 0 and given(r, "training.gradient_clipping"):
        yield ("training", "gradient_clipping"), "is true but max_grad_norm is 0, so nothing is clipped; raise max_grad_norm"


@rule("FTC144", "warning", "checkpoint settings without evaluation")
def _checkpoints_without_eval(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Checkpoints are saved at evaluations, so without evaluation (run_validation false or evaluation_strategy no,
    and no checkpoint_every_n_epochs / max_num_checkpoints) save_total_limit has no effect; the final model is
    still saved."""
    ck = r.spec.checkpointing
    if r.spec.evaluation.evaluation_strategy != "no" or ck.checkpoint_every_n_epochs or ck.max_num_checkpoints:
        return
    if given(r, "checkpointing.save_total_limit"):
        yield (
            ("checkpointing", "save_total_limit"),
            "has no effect: checkpoints are saved at evaluations and evaluation is off; turn evaluation on or remove it",
        )
