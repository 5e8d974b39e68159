"""ftc's transformers Trainer: throughput, FLOPs, perplexity, the "step" scheduler, and its callbacks.

`FtcTrainer` (and `FtcSeq2SeqTrainer`, whose evaluation generates) adds to transformers' Trainer:
samples/s and tokens/s on the progress bar and in the training logs, the FLOP counter
(tracking.flop_counter), perplexity for causal_lm, FSDP-safe checkpoint folders and llama-recipes'
"step" scheduler. `make_trainer` builds one with the spec's callbacks: the log file, the run
identity every checkpoint records (ftc/runtime/resume.py), the profiler, ftc's checkpoint rotation
(save_total_limit: the best by metric_for_best_model plus the newest; ftc/runtime/callbacks.py),
which replaces the Trainer's, and early stopping.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import EarlyStoppingCallback, Seq2SeqTrainer, Trainer, TrainerCallback

from ftc.runtime import callbacks as cbs
from ftc.runtime import fsdp
from ftc.runtime.config import RunConfig
from ftc.runtime.logs import jsonable, train_log
from ftc.runtime.resume import RecordRunIdentity, run_identity
from ftc.runtime.tasks import Prepared


@dataclass(frozen=True)
class StepSchedule:
    """llama-recipes' "step" scheduler: linear warm-up, then the learning rate times gamma ** epoch."""

    gamma: float
    per_epoch: int

    def factor(self, step: int, warmup: int) -> float:
        """The learning rate's multiplier at optimizer step `step`."""
        ramp = (step + 1) / warmup if step < warmup else 1.0
        return ramp * self.gamma ** (step // self.per_epoch)


class FtcTrainer(Trainer):
    """transformers' Trainer with ftc's throughput, FLOP counter, perplexity and "step" scheduler."""

    def __init__(
        self,
        *args: Any,
        throughput: cbs.Throughput,
        flops: cbs.FlopCounter | None = None,
        headline_metric: str = "accuracy",
        step_schedule: StepSchedule | None = None,
        **kwargs: Any,
    ) -> None:
        self.ftc_throughput = throughput
        self.ftc_flops = flops
        self.ftc_headline_metric = headline_metric
        self.ftc_step_schedule = step_schedule
        super().__init__(*args, **kwargs)

    def get_batch_samples(self, *a: Any, **kw: Any) -> Any:
        self.ftc_throughput.start()  # fetching the step's batches is training time; ThroughputCallback stops the clock
        return super().get_batch_samples(*a, **kw)

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        self.ftc_throughput.count(inputs)
        flops = self.ftc_flops
        if flops is not None and flops.counting(self.state.global_step):
            parent = super()
            return flops.run(lambda: parent.training_step(model, inputs, num_items_in_batch), inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
        output = super().evaluation_loop(*args, **kwargs)
        if self.ftc_headline_metric == "perplexity":  # causal_lm: before the metrics are logged and compared
            add_perplexity(output.metrics, kwargs.get("metric_key_prefix", "eval"))
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log record (every process calls log: counts are summed over them)
            logs.update(self.ftc_throughput.log_fields())
        super().log(logs, start_time)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        fsdp.prepare_checkpoint_folder(self, output_dir)
        super().save_model(output_dir, _internal_call)

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        schedule = self.ftc_step_schedule
        if schedule is None:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            warmup = self.args.get_warmup_steps(num_training_steps)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer or self.optimizer, lambda step: schedule.factor(step, warmup)
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler


class FtcSeq2SeqTrainer(FtcTrainer, Seq2SeqTrainer):
    """FtcTrainer whose evaluation generates (seq2seq tasks: Prepared.generation)."""


class LogToFile(TrainerCallback):
    """The Trainer's log records (loss, learning rate, evaluations) in the log file, by step, from rank 0."""

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            train_log.info("step %d: %s", state.global_step, json.dumps(jsonable(logs)))


def add_perplexity(metrics: dict[str, float], prefix: str) -> None:
    """`<prefix>_perplexity`: exp of `<prefix>_loss` (inf where it overflows)."""
    loss = metrics.get(f"{prefix}_loss")
    if loss is not None:
        metrics[f"{prefix}_perplexity"] = math.exp(loss) if loss < 700 else math.inf


def trainer_callbacks(
    cfg: RunConfig, args: Any, throughput: cbs.Throughput, flops: cbs.FlopCounter | None,
    *, out: Path | None, rank: int, world_size: int, cuda: bool,
) -> list[Any]:
    """The spec's Trainer callbacks; with save_total_limit, ftc's rotation takes over from the Trainer's."""
    # every rank saved its part before anything reads the checkpoint; then every checkpoint records the values it
    # was trained with, which resume compares (ftc/runtime/resume.py)
    callbacks: list[Any] = [
        cbs.AllRanksSaved(), LogToFile(), cbs.ThroughputCallback(throughput), RecordRunIdentity(run_identity(cfg, world_size)),
    ]
    if flops is not None:
        callbacks.append(flops)
    if cfg.spec.tracking.use_profiler:
        folder = cfg.path("tracking", "profiler_dir") or (out or Path(args.output_dir)) / cbs.PROFILER_FOLDER
        callbacks.append(cbs.ProfilerCallback(folder, rank, cuda))
    if args.save_total_limit and args.save_total_limit > 0:
        # ftc rotates the checkpoints itself (the best by metric_for_best_model + the newest), not the Trainer
        callbacks.append(cbs.KeepBestCheckpoints(args.save_total_limit, args.metric_for_best_model, bool(args.greater_is_better)))
        args.save_total_limit = None
    es = cfg.spec.early_stopping
    if es.apply_early_stopping:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=es.early_stopping_patience,
                early_stopping_threshold=es.early_stopping_threshold,
            )
        )
    return callbacks


def make_trainer(
    cfg: RunConfig,
    prepared: Prepared,
    args: Any,
    per_epoch: int,
    *,
    out: Path | None = None,
    rank: int = 0,
    world_size: int = 1,
    cuda: bool = False,
) -> FtcTrainer:
    """An FtcTrainer (FtcSeq2SeqTrainer for tasks that generate) of the prepared task, with the spec's callbacks."""
    tk, opt = cfg.spec.tracking, cfg.spec.optimizer
    throughput = cbs.Throughput(world_size)
    flops = cbs.FlopCounter(tk.flop_counter_start, out / cbs.FLOPS_FILE if out else None, world_size, cuda) if tk.flop_counter else None
    callbacks = trainer_callbacks(cfg, args, throughput, flops, out=out, rank=rank, world_size=world_size, cuda=cuda)
    kind = FtcSeq2SeqTrainer if prepared.generation else FtcTrainer
    trainer = kind(
        model=prepared.model,
        args=args,
        data_collator=prepared.data_collator,
        train_dataset=prepared.train_dataset,
        eval_dataset=prepared.eval_dataset,
        processing_class=prepared.tokenizer,
        compute_metrics=prepared.compute_metrics,
        callbacks=callbacks,
        throughput=throughput,
        flops=flops,
        headline_metric=prepared.headline_metric,
        step_schedule=StepSchedule(opt.gamma, per_epoch) if opt.lr_scheduler_type == "step" else None,
    )
    if not prepared.loss_uses_num_items:
        trainer.model_accepts_loss_kwargs = False
    for cb in callbacks:
        if isinstance(cb, cbs.ThroughputCallback):
            cb.attach(trainer)  # finds the Trainer's tqdm progress bar
    return trainer
