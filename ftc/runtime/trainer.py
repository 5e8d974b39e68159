"""The shared trainer: spec -> TrainingArguments + Trainer, evaluation before and after, outputs.

Every task goes through `run`: the task reads its data and builds model and datasets; this
module applies LoRA, maps the spec onto transformers 5's TrainingArguments, trains, and writes
`<output_dir>/pytorch_model_folder/` (final model, tokenizer, checkpoints), `metrics.json` and
`ftc_runtime.log`. Only rank 0 writes outputs when several processes run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from ftc.runtime import disk, fsdp, preemption, zero
from ftc.runtime.config import RunConfig, ensure_output_dir
from ftc.runtime.errors import RuntimeUserError, Stopped
from ftc.runtime.tasks import Prepared, get_task
from ftc.spec.secrets import mask_secrets
from ftc.spec.sections import LOWER_IS_BETTER

log = logging.getLogger("ftc.runtime")
# Trainer log records (loss, learning rate, eval metrics) go to the log file only: the
# progress bar already shows them on the console.
train_log = logging.getLogger("ftc.runtime.train")

MODEL_FOLDER = "pytorch_model_folder"
METRICS_FILE = "metrics.json"
LOG_FILE = "ftc_runtime.log"
MODEL_INFO_FILE = "ftc_model_info.json"  # task, labels, what was saved (model, merged or adapter)
STEP_METRICS_FILE = "train_log_history.json"  # tracking.save_metrics: the Trainer's log records by step
OPTIM_ALIASES = {"adamw_hf": "adamw_torch"}  # transformers 5 removed adamw_hf
ORT_UNAVAILABLE = (  # = lint rule FTC107 (ftc/spec/rules.py)
    "ONNX Runtime training cannot run with transformers 5 / torch 2.13 (ORTTrainer no longer imports); "
    "set apply_ort: false and use precision: 16 or use_fast_kernels for speed"
)
_NO_EVAL = "no"


# --------------------------------------------------------------------------- processes, logging


def rank_info() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (torchrun, deepspeed, Ray)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class _Logs:
    """Console and log-file handlers of one run, removed again at the end (the runtime may run in-process)."""

    def __init__(self, out_dir: Path | None, is_main: bool) -> None:
        self.handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self.file: Path | None = None
        self.file_handler: logging.Handler | None = None
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(_MaskedFormatter("[ftc] %(message)s"))
        console.setLevel(logging.INFO if is_main else logging.WARNING)
        self._add(log, console)
        log.setLevel(logging.INFO)
        train_log.setLevel(logging.INFO)
        train_log.propagate = False
        if out_dir is not None and is_main:
            ensure_output_dir(out_dir)
            self.file = out_dir / LOG_FILE
            fh = _QuietFileHandler(self.file, encoding="utf-8")
            fh.setFormatter(_MaskedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            fh.setLevel(logging.INFO)
            self.file_handler = fh
            self._add(log, fh)
            self._add(train_log, fh)
            self._add(logging.getLogger("transformers"), fh, level=logging.WARNING)

    def _add(self, logger: logging.Logger, handler: logging.Handler, level: int | None = None) -> None:
        if level is not None:
            handler = _LevelFilterHandler(handler, level)
        logger.addHandler(handler)
        self.handlers.append((logger, handler))

    def to_file(self, level: int, message: str) -> None:
        if self.file_handler is not None:
            self.file_handler.handle(log.makeRecord(log.name, level, __file__, 0, message, (), None))

    def close(self) -> None:
        for logger, handler in self.handlers:
            logger.removeHandler(handler)
            handler.close()
        self.handlers.clear()


class _MaskedFormatter(logging.Formatter):
    """Formats a record with every token-shaped substring masked: message, arguments and traceback."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class _QuietFileHandler(logging.FileHandler):
    """The log file: a record that cannot be written (a full disk) is dropped, not printed with a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


class _LevelFilterHandler(logging.Handler):
    """Forwards records at or above `level` to another handler (shared file, own threshold)."""

    def __init__(self, target: logging.Handler, level: int) -> None:
        super().__init__(level)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


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
    if strategy == "steps":
        kwargs["eval_steps"] = eval_steps
        kwargs["save_steps"] = eval_steps
    cadence = checkpoint_cadence(cfg, per_epoch)
    if not evaluating and cadence is not None:  # Anyscale's checkpoints without validation data: save only
        kwargs["save_strategy"] = "steps"
        kwargs["save_steps"] = cadence
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
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    kwargs = training_arguments_kwargs(cfg, n_train, has_eval, cuda, world_size)
    try:
        if generation:  # seq2seq tasks: Prepared.generation (predict_with_generate, ...)
            return Seq2SeqTrainingArguments(**kwargs, **generation)
        return TrainingArguments(**kwargs)
    except ValueError as exc:
        raise RuntimeUserError(f"invalid training settings: {exc}") from None


# --------------------------------------------------------------------------- Trainer


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
) -> Any:
    """A transformers Trainer (with the llama-recipes "step" scheduler and the spec's callbacks).

    Also: samples/s and tokens/s on the progress bar and in the training logs, the FLOP counter and
    the profiler (tracking.*), and ftc's checkpoint rotation (save_total_limit: the best by
    metric_for_best_model plus the newest; see ftc/runtime/callbacks.py), which replaces the Trainer's.
    """
    import torch
    from transformers import EarlyStoppingCallback, Seq2SeqTrainer, Trainer, TrainerCallback

    from ftc.runtime import callbacks as cbs
    from ftc.runtime.resume import RecordRunIdentity, run_identity

    opt, tk = cfg.spec.optimizer, cfg.spec.tracking
    base: Any = Seq2SeqTrainer if prepared.generation else Trainer  # seq2seq: evaluation generates
    throughput = cbs.Throughput(world_size)
    flops = (
        cbs.FlopCounter(tk.flop_counter_start, out / cbs.FLOPS_FILE if out else None, world_size, cuda)
        if tk.flop_counter
        else None
    )

    class FtcTrainer(base):  # type: ignore[misc,valid-type]
        ftc_throughput = throughput

        def get_batch_samples(self, *a: Any, **kw: Any) -> Any:
            throughput.start()  # fetching the step's batches is training time; ThroughputCallback stops the clock
            return super().get_batch_samples(*a, **kw)

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            throughput.count(inputs)
            if flops is not None and flops.counting(self.state.global_step):
                parent = super(FtcTrainer, self)
                return flops.run(lambda: parent.training_step(model, inputs, num_items_in_batch), inputs)
            return super().training_step(model, inputs, num_items_in_batch)

        def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
            output = super().evaluation_loop(*args, **kwargs)
            if prepared.headline_metric == "perplexity":  # causal_lm: before the metrics are logged and compared
                add_perplexity(output.metrics, kwargs.get("metric_key_prefix", "eval"))
            return output

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs:  # a training log record (every process calls log: counts are summed over them)
                logs.update(throughput.log_fields())
            super().log(logs, start_time)

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            fsdp.prepare_checkpoint_folder(self, output_dir)
            super().save_model(output_dir, _internal_call)

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if opt.lr_scheduler_type != "step":
                return super().create_scheduler(num_training_steps, optimizer)
            if self.lr_scheduler is None:
                warmup = self.args.get_warmup_steps(num_training_steps)
                gamma = opt.gamma

                def factor(step: int) -> float:
                    ramp = (step + 1) / warmup if step < warmup else 1.0
                    return ramp * gamma ** (step // per_epoch)

                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
                self._created_lr_scheduler = True
            return self.lr_scheduler

    class LogToFile(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and state.is_world_process_zero:
                train_log.info("step %d: %s", state.global_step, json.dumps(_jsonable(logs)))

    # every checkpoint records the values it was trained with; resume compares them (ftc/runtime/resume.py)
    callbacks: list[Any] = [LogToFile(), cbs.ThroughputCallback(throughput), RecordRunIdentity(run_identity(cfg, world_size))]
    if flops is not None:
        callbacks.append(flops)
    if tk.use_profiler:
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
    trainer = FtcTrainer(
        model=prepared.model,
        args=args,
        data_collator=prepared.data_collator,
        train_dataset=prepared.train_dataset,
        eval_dataset=prepared.eval_dataset,
        processing_class=prepared.tokenizer,
        compute_metrics=prepared.compute_metrics,
        callbacks=callbacks,
    )
    if not prepared.loss_uses_num_items:
        trainer.model_accepts_loss_kwargs = False
    for cb in callbacks:
        if isinstance(cb, cbs.ThroughputCallback):
            cb.attach(trainer)  # finds the Trainer's tqdm progress bar
    return trainer


def last_evaluation_of_final_model(trainer: Any) -> dict[str, float] | None:
    """The metrics of the evaluation at the last step when the model now is the one it evaluated; else None.

    The Trainer evaluates at the last step (evaluation by epoch, or steps that divide the total);
    with load_best_model_at_end it then reloads the best checkpoint, which is the final weights only
    when the best is that last step. Every process decides alike (the log history is the same)."""
    state = trainer.state
    last = next((e for e in reversed(state.log_history) if any(k.startswith("eval_") for k in e)), None)
    if last is None or last.get("step") != state.global_step:
        return None
    best = getattr(state, "best_global_step", None)
    if trainer.args.load_best_model_at_end and best is not None and best != state.global_step:
        return None
    return {k: v for k, v in last.items() if k != "step"}


def add_perplexity(metrics: dict[str, float], prefix: str) -> None:
    """`<prefix>_perplexity`: exp of `<prefix>_loss` (inf where it overflows)."""
    loss = metrics.get(f"{prefix}_loss")
    if loss is not None:
        metrics[f"{prefix}_perplexity"] = math.exp(loss) if loss < 700 else math.inf


def freeze_first_layers(model: Any, n: int) -> None:
    """Freeze the first n transformer layers (llama-recipes freeze_layers)."""
    import torch

    backbone = getattr(model, "base_model", model)
    for path in ("encoder.layer", "layers", "h", "transformer.layer", "encoder.layers", "encoder.block", "block"):
        obj: Any = backbone
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList):
            for layer in obj[:n]:
                for p in layer.parameters():
                    p.requires_grad_(False)
            log.info("froze the first %d of %d layers", min(n, len(obj)), len(obj))
            return
    raise RuntimeUserError(
        f"training.freeze_layers: cannot find the layers of model type {getattr(model.config, 'model_type', '?')!r}"
    )


# --------------------------------------------------------------------------- the run


def run(cfg: RunConfig) -> dict[str, float]:
    """Train the spec's task and write the outputs; returns the metrics written to metrics.json."""
    rank, world_size = rank_info()
    is_main = rank == 0
    out = cfg.output_dir
    logs = _Logs(out, is_main)
    preempt = preemption.for_run()  # SIGTERM, SIGINT (and SLURM's requeue signal) stop the run from here on
    on_failure: list[Any] = []  # experiment tracking: end its runs when training fails
    status = "FAILED"
    try:
        metrics = _run(cfg, out, world_size, is_main, on_failure, preempt=preempt)
        on_failure.clear()
        return metrics
    except preemption.Interrupted as exc:  # a stop signal before training started
        status = "KILLED"
        stopped = exc.error()
        logs.to_file(logging.ERROR, str(stopped))
        raise stopped from None
    except RuntimeUserError as exc:
        if isinstance(exc, Stopped):
            status = "KILLED"
        logs.to_file(logging.ERROR, str(exc))  # the console gets it once, from __main__
        raise
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        for end in on_failure:
            end(status)
        logs.close()
        preempt.uninstall()  # last: a signal as the run ends (torchrun stopping the other ranks) does not cut it short


def peak_gpu_memory() -> dict[str, float]:
    """train_peak_gpu_memory_gb: the most GPU memory this process's tensors held (none on CPU)."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"train_peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)}


def _run(
    cfg: RunConfig, out: Path, world_size: int, is_main: bool, on_failure: list[Any] | None = None,
    *, preempt: preemption.Preemption,
) -> dict[str, float]:
    started = time.time()
    s = cfg.spec
    log.info("task %s, model %s, outputs in %s", cfg.task, cfg.spec.model.model_selector_output, out)
    task = get_task(cfg.task)
    cuda = use_cuda(cfg)
    check_supported(cfg, cuda)
    if s.precision.precision == "auto":
        chosen, why = auto_precision(cuda)
        log.info("precision auto: %s (%s)", "fp32" if chosen == "32" else chosen, why)
    if s.deepspeed.apply_deepspeed:
        zero.deepspeed_env_defaults()
    data = task.load_data(cfg)  # bad data fails here, before any model is loaded

    resume = None
    if s.checkpointing.resume_from_checkpoint or preemption.restarted():
        from ftc.runtime.resume import checkpoint_to_resume

        folder = out / MODEL_FOLDER  # TrainingArguments.output_dir
        good = checkpoint_to_resume(cfg, folder, world_size, is_main)  # refuses one trained with other values
        resume = str(good) if good is not None else None
        if resume:
            log.info("resuming from %s", resume)
        else:
            log.info("no checkpoint to resume from in %s; starting from the model", folder)

    tracking = None
    if is_main:  # MLflow (SQLite in the output folder by default), W&B when asked; a bad store fails here
        from ftc.runtime.tracking import Tracking

        tracking = Tracking(cfg, out)
        if on_failure is not None:
            on_failure.append(lambda status: tracking.finish(status))
        tracking.start(resume=resume is not None)

    import torch
    from transformers import set_seed

    from ftc.runtime import outputs
    from ftc.runtime.lora import apply_peft, is_peft, save_final_model
    from ftc.runtime.models import model_source

    if s.resources.cpus_per_process:
        torch.set_num_threads(s.resources.cpus_per_process)
    set_seed(s.training.seed)  # the new classifier head is initialised reproducibly
    prepared = task.prepare(cfg, data)
    if s.training.freeze_layers:
        freeze_first_layers(prepared.model, s.training.num_freeze_layers)
    if s.lora.apply_lora or s.lora.from_peft_checkpoint:
        prepared.model = apply_peft(prepared.model, cfg, prepared.peft_task_type)
    n_train = len(prepared.train_dataset)
    if s.evaluation.max_eval_steps and prepared.eval_dataset is not None:
        keep = s.evaluation.max_eval_steps * s.training.per_device_eval_batch_size * max(1, world_size)
        prepared.eval_dataset = prepared.eval_dataset.select(range(min(keep, len(prepared.eval_dataset))))
    has_eval = prepared.eval_dataset is not None and len(prepared.eval_dataset) > 0
    per_epoch = steps_per_epoch(cfg, n_train, world_size)
    args = build_training_arguments(cfg, n_train, has_eval, cuda, world_size, generation=prepared.generation)
    with fsdp.on_cpu_processes(cuda):
        trainer = make_trainer(cfg, prepared, args, per_epoch, out=out, rank=rank_info()[0], world_size=world_size, cuda=cuda)
    trainer.add_callback(preempt.callback())  # a signal from here on: checkpoint at the end of the step, stop
    total = args.max_steps if args.max_steps > 0 else int(args.num_train_epochs) * per_epoch
    log.info(
        "training on %s: %d rows, %d step(s) (%d per epoch), batch %d x %d process(es) x %d accumulation",
        "GPU" if cuda else "CPU", n_train, total, per_epoch,
        args.per_device_train_batch_size, world_size, args.gradient_accumulation_steps,
    )

    if tracking is not None:
        trainer.add_callback(tracking.callback())

    metrics: dict[str, float] = {}
    if has_eval:
        initial = zero.evaluate_before_training(trainer)
        metrics.update({f"initial_{k}": v for k, v in initial.items() if k != "epoch"})
        _show(prepared, "before training", initial)

    checkpoints = Path(args.output_dir)
    with disk.writing("a checkpoint", checkpoints, out, checkpoints):
        result = trainer.train(resume_from_checkpoint=resume)
    if preempt.stopped:  # the checkpoint of the step the signal came in is written
        if tracking is not None:
            tracking.finish("KILLED")
        if not preempt.requeue:
            raise preempt.error(out)  # SIGTERM, SIGINT: exit 128 + the signal
        preempt.finish()  # SLURM's requeue signal: the marker file tells the job script to requeue
        return {}
    if preempt.pending is not None:
        log.info("%s came after the last training step: the run writes its outputs and ends", preempt.pending.name)
    train_metrics = dict(result.metrics)
    _, tokens, _ = trainer.ftc_throughput.totals(reduce=True)  # every process: sums over them
    if tokens and train_metrics.get("train_runtime"):
        train_metrics["train_tokens_per_second"] = round(tokens / train_metrics["train_runtime"], 3)
    train_metrics.update(peak_gpu_memory())

    final: dict[str, float] = {}
    if has_eval:
        final = last_evaluation_of_final_model(trainer) or trainer.evaluate()
    if prepared.test_dataset is not None:
        if prepared.test_compute_metrics is not None:
            trainer.compute_metrics = prepared.test_compute_metrics
        test = trainer.evaluate(prepared.test_dataset, metric_key_prefix="test")
        metrics.update(test)
        _show(prepared, "test", test, prefix="test_")

    folder = checkpoints  # the final model goes next to the checkpoints
    saved = "nothing (checkpointing.save_model is false)"
    if s.checkpointing.save_model:
        with disk.writing("the final model", folder, out, checkpoints, final_model=True):
            model = trainer.model
            if trainer.is_fsdp_enabled:  # every rank gathers the shards; rank 0 writes
                saved = fsdp.save_final_model(trainer, folder)
            elif is_peft(model) and s.lora.merge_lora_weights:
                with zero.gathered_parameters(trainer):  # ZeRO-3: every rank gathers the shards, rank 0 merges and writes
                    if trainer.is_world_process_zero():
                        saved = save_final_model(model, folder, merge=True)
                        prepared.tokenizer.save_pretrained(str(folder))
            else:
                trainer.save_model(str(folder))  # every rank: DeepSpeed gathers; rank 0 writes
                saved = "adapter" if is_peft(model) else "model"
            if trainer.is_world_process_zero():
                info = {"task": cfg.task, "saved": saved, "base_model": model_source(cfg), **prepared.info}
                (folder / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")

    metrics = {**final, **metrics, **train_metrics}
    metrics = {k: v for k, v in _jsonable(metrics).items() if isinstance(v, (int, float))}
    artifacts: list[Path] = []
    if trainer.is_world_process_zero() and is_main:
        out.mkdir(parents=True, exist_ok=True)
        with disk.writing(f"{METRICS_FILE} and {outputs.CURVES_FILE}", out, out, checkpoints):
            (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
            artifacts.append(out / METRICS_FILE)
            if s.tracking.save_metrics:  # every log record (loss, learning rate, throughput, evaluations) by step
                (out / STEP_METRICS_FILE).write_text(json.dumps(_jsonable(trainer.state.log_history), indent=2) + "\n")
                artifacts.append(out / STEP_METRICS_FILE)
            curves = _training_curves(cfg, prepared, trainer, metrics, n_train, out / outputs.CURVES_FILE)
            if curves is not None:
                artifacts.append(curves)
        if s.checkpointing.save_as_mlflow_model:  # after everything else: a LoRA model is merged in place
            with zero.rank_zero_loading(), disk.writing("the MLflow model", out / outputs.MLFLOW_FOLDER, out, checkpoints):
                outputs.save_mlflow_model(
                    cfg.task, trainer, prepared.tokenizer, out, info=prepared.info,
                    saved=saved if s.checkpointing.save_model else "", model_folder=folder if s.checkpointing.save_model else None,
                    peft_method=s.lora.peft_method,
                )
    if tracking is not None:
        tracking.finish("FINISHED", artifacts)
    if has_eval and is_main:
        _show(prepared, "after training", final)
        _summary(prepared, metrics)
    log.info(
        "saved %s to %s; metrics in %s; %.0f s in all",
        saved, folder, out / METRICS_FILE, time.time() - started,
    )
    return metrics


def _training_curves(cfg: RunConfig, prepared: Prepared, trainer: Any, metrics: dict[str, float], n_train: int, path: Path) -> Path | None:
    """training_curves.png: loss, learning rate, validation metrics, before / after (ftc/runtime/outputs.py)."""
    from ftc.runtime import outputs

    name = prepared.headline_metric
    before, after = metrics.get(f"initial_eval_{name}"), metrics.get(f"eval_{name}")
    state = trainer.state
    best = getattr(state, "best_global_step", None) if trainer.args.load_best_model_at_end else None
    headline = None
    if before is not None and after is not None:
        headline = f"validation {name}: {before:.4f} before training, {after:.4f} after"
        if best:
            headline += f" (best model: step {best})"
    model = Path(str(cfg.spec.model.model_selector_output)).name or str(cfg.spec.model.model_selector_output)
    facts = [f"{n_train} training rows", f"{state.global_step} steps", f"{state.epoch or 0:.3g} epochs"]
    if metrics.get("train_runtime"):
        facts.append(f"{metrics['train_runtime']:.1f} s")
    if metrics.get("train_samples_per_second"):
        facts.append(f"{metrics['train_samples_per_second']:.1f} samples/s")
    if metrics.get("train_tokens_per_second"):
        facts.append(f"{metrics['train_tokens_per_second']:.0f} tokens/s")
    if metrics.get(f"test_{name}") is not None:
        facts.append(f"test {name} {metrics[f'test_{name}']:.4f}")
    # The evaluation before training happened before trainer.train(), which starts a new log history.
    initial = {k[len("initial_"):]: v for k, v in metrics.items() if k.startswith("initial_eval_")}
    history = ([{**initial, "epoch": 0.0, "step": 0}] if initial else []) + list(state.log_history)
    try:
        return outputs.write_training_curves(
            path, history, f"{cfg.derived.get('name') or cfg.task}: {cfg.task}, {model}", headline, best, facts, name
        )
    except Exception as exc:  # a report must never fail a finished training
        log.warning("could not draw %s: %s", path, exc)
        return None


def _show(prepared: Prepared, when: str, metrics: dict[str, Any], prefix: str = "eval_") -> None:
    shown = ", ".join(
        f"{k[len(prefix):]} {v:.4f}"
        for k, v in metrics.items()
        if k.startswith(prefix) and isinstance(v, float) and not k.endswith(("_runtime", "_per_second", "_time"))
    )
    log.info("%s: %s", "test data" if prefix == "test_" else f"validation {when}", shown)


def _summary(prepared: Prepared, metrics: dict[str, float]) -> None:
    name = prepared.headline_metric
    lines = []
    for metric in (name, "loss"):
        before, after = metrics.get(f"initial_eval_{metric}"), metrics.get(f"eval_{metric}")
        if before is not None and after is not None:
            lines.append(f"validation {metric} before: {before:.4f}  after: {after:.4f}")
    text = "\n".join(lines)
    if text:
        print(text, flush=True)
        for line in lines:
            train_log.info(line)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value
