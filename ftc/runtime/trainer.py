"""The shared trainer: spec -> TrainingArguments + Trainer, evaluation before and after, outputs.

Every task goes through `run`, in named phases: checks, data (the task reads its data), resume (the
checkpoint to continue from), tracking (MLflow, W&B), model (the task builds model and datasets;
freezing, LoRA), train (TrainingArguments, the Trainer, training), evaluate (before and after
training, test data), save (the final model), report (`metrics.json`, curves, the MLflow model,
the summary) and publish (a remote output_dir gets the outputs). Outputs: `<output_dir>/pytorch_model_folder/`
(final model, tokenizer, checkpoints), `metrics.json` (with "ranks": where each rank ran, ftc/runtime/placement.py)
and `ftc_runtime.log`. Only rank 0 writes outputs when
several processes run.

A remote output_dir (s3://, gs://, abfs://: ftc.spec.uris) is staged in a local folder of the node
(RunConfig.output_dir); each checkpoint is uploaded when it is saved (callbacks.UploadCheckpoints), the
other outputs at the end (publish_outputs), and a resume downloads the newest complete checkpoint
(resume.fetch_remote_checkpoint).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftc.contract import MODEL_FOLDER
from ftc.runtime import disk, fsdp, placement, preemption, storage, zero
from ftc.runtime.config import RunConfig
from ftc.runtime.errors import RuntimeUserError, Stopped, UsageError
from ftc.runtime.logs import RunLogs, jsonable, log, train_log
from ftc.runtime.tasks import Prepared, Task, get_task
from ftc.runtime.training_args import (
    auto_precision,
    build_training_arguments,
    check_supported,
    rows_of_max_steps,
    steps_per_epoch,
    use_cuda,
)

if TYPE_CHECKING:
    from ftc.runtime.tracking import Tracking

METRICS_FILE = "metrics.json"
MODEL_INFO_FILE = "ftc_model_info.json"  # task, labels, what was saved (model, merged or adapter)
STEP_METRICS_FILE = "train_log_history.json"  # tracking.save_metrics: the Trainer's log records by step
NOT_SAVED = "nothing (checkpointing.save_model is false)"


def rank_info() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment (torchrun, deepspeed, Ray)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Training:
    """A run once its Trainer is built: what the phases after that share."""

    cfg: RunConfig
    prepared: Prepared
    trainer: Any
    tracking: Tracking | None
    n_train: int
    has_eval: bool
    is_main: bool
    ranks: list[dict[str, Any]] = field(default_factory=list)  # placement.gather_ranks: where each rank runs

    @property
    def out(self) -> Path:
        """The run's output folder (checkpointing.output_dir)."""
        return self.cfg.output_dir

    @property
    def resume_at(self) -> str:
        """The output folder a resume names: the remote one where outputs are uploaded, else `out`."""
        return self.cfg.output_uri or str(self.out)

    @property
    def checkpoints(self) -> Path:
        """TrainingArguments.output_dir: the checkpoints, and the final model next to them."""
        return Path(self.trainer.args.output_dir)


# --------------------------------------------------------------------------- the run


def run(cfg: RunConfig, callbacks: list[Any] | None = None) -> dict[str, float]:
    """Train the spec's task and write the outputs; returns the metrics written to metrics.json.

    `callbacks`: extra Trainer callbacks (Ray Train's reports and checkpoints), added after the spec's
    and before those of stop signals and experiment tracking. Returns {} when a signal stopped training (the checkpoint of its step is written)."""
    rank, world_size = rank_info()
    is_main = rank == 0
    with _guarded(cfg, is_main) as (preempt, on_failure):
        started = time.time()
        task, cuda = check(cfg)
        data = load_data(cfg, task)
        resume = find_checkpoint(cfg, world_size, is_main)
        tracking = start_tracking(cfg, is_main, resume is not None, on_failure)
        prepared = build_model(cfg, task, data)
        extra = [*(callbacks or []), *_upload_callbacks(cfg), preempt.callback()]
        training = build_trainer(cfg, prepared, tracking, rank, world_size, cuda, extra)
        initial = evaluate_before_training(training)
        train_metrics = train(training, resume, preempt)
        if train_metrics is None:
            return {}
        final, test = evaluate_after_training(training)
        saved = save_final_model(training)
        metrics = report(training, final, {**initial, **test, **train_metrics}, saved, started)
        publish_outputs(cfg, is_main)
        return metrics


@contextmanager
def _guarded(cfg: RunConfig, is_main: bool) -> Iterator[tuple[preemption.Preemption, list[Any]]]:
    """The log handlers and stop-signal handlers of one run, and `on_failure`: what ends experiment tracking
    (with FAILED, or KILLED for a signal) when the run does not finish. Errors reach the log file here."""
    logs = RunLogs(cfg.output_dir, is_main)
    preempt = preemption.for_run()  # SIGTERM, SIGINT (and SLURM's requeue signal) stop the run from here on
    on_failure: list[Any] = []
    status = "FAILED"
    try:
        yield preempt, on_failure
        on_failure.clear()
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


# --------------------------------------------------------------------------- phases


def check(cfg: RunConfig) -> tuple[Task, bool]:
    """Phase checks: the task, whether training runs on GPUs, and refusals before any loading."""
    log.info("task %s, model %s, outputs in %s", cfg.task, cfg.spec.model.model_selector_output, cfg.output_dir)
    task = get_task(cfg.task)
    cuda = use_cuda(cfg)
    check_supported(cfg, cuda)
    if cfg.spec.precision.precision == "auto":
        chosen, why = auto_precision(cuda)
        log.info("precision auto: %s (%s)", "fp32" if chosen == "32" else chosen, why)
    if cfg.spec.deepspeed.apply_deepspeed:
        zero.deepspeed_env_defaults()
    if cfg.output_uri is not None:
        storage.check_usable(cfg.output_uri, "checkpointing.output_dir")
        if int(os.environ.get("WORLD_SIZE", "1")) > int(os.environ.get("LOCAL_WORLD_SIZE", "1")) and (
            cfg.spec.deepspeed.apply_deepspeed or cfg.spec.fsdp.enable_fsdp
        ):
            raise UsageError(  # lint rule FTC165
                f"checkpointing.output_dir {cfg.output_uri!r}: DeepSpeed / FSDP checkpoints are sharded over the "
                "nodes, and only the first node's are uploaded; use a folder every node sees, or one node"
            )
    return task, cuda


def load_data(cfg: RunConfig, task: Task) -> Any:
    """Phase data: the task reads and checks its data, so that bad data fails before any model is loaded."""
    return task.load_data(cfg)


def find_checkpoint(cfg: RunConfig, world_size: int, is_main: bool) -> str | None:
    """Phase resume: the checkpoint to continue from (resume_from_checkpoint, or a requeued job); None: the model."""
    if not (cfg.spec.checkpointing.resume_from_checkpoint or preemption.restarted()):
        return None
    from ftc.runtime import resume

    folder = cfg.output_dir / MODEL_FOLDER  # TrainingArguments.output_dir
    if cfg.output_uri is not None:
        resume.fetch_remote_checkpoint(cfg, folder)
    good = resume.checkpoint_to_resume(cfg, folder, world_size, is_main)  # refuses one trained with other values
    if good is None:
        log.info("no checkpoint to resume from in %s; starting from the model", folder)
        return None
    log.info("resuming from %s", good)
    return str(good)


def start_tracking(cfg: RunConfig, is_main: bool, resuming: bool, on_failure: list[Any]) -> Tracking | None:
    """Phase tracking: MLflow (SQLite in the output folder by default), W&B when asked; rank 0 only.

    A bad store fails here. The runs end with the run's status if training fails (`on_failure`)."""
    if not is_main:
        return None
    from ftc.runtime.tracking import Tracking

    tracking = Tracking(cfg, cfg.output_dir)
    on_failure.append(lambda status: tracking.finish(status))
    tracking.start(resume=resuming)
    return tracking


def build_model(cfg: RunConfig, task: Task, data: Any) -> Prepared:
    """Phase model: the task's model and datasets (seeded), frozen layers, LoRA / PEFT."""
    import torch
    from transformers import set_seed

    from ftc.runtime.lora import apply_peft

    s = cfg.spec
    if s.resources.cpus_per_process:
        torch.set_num_threads(s.resources.cpus_per_process)
    set_seed(s.training.seed)  # the new classifier head is initialised reproducibly
    prepared = task.prepare(cfg, data)
    if s.training.freeze_layers:
        freeze_first_layers(prepared.model, s.training.num_freeze_layers)
    if s.lora.apply_lora or s.lora.from_peft_checkpoint:
        prepared.model = apply_peft(prepared.model, cfg, prepared.peft_task_type)
    return prepared


def build_trainer(
    cfg: RunConfig, prepared: Prepared, tracking: Tracking | None, rank: int, world_size: int, cuda: bool, callbacks: list[Any]
) -> Training:
    """Phase train, set-up: validation rows (max_eval_steps), TrainingArguments, the Trainer and its callbacks."""
    from ftc.runtime import hf_trainer

    train = prepared.train_dataset  # a streamed dataset (data.streaming) has no length: max_steps bound it
    n_train = len(train) if hasattr(train, "__len__") else rows_of_max_steps(cfg, world_size)
    limit_validation_data(cfg, prepared, world_size)
    has_eval = prepared.eval_dataset is not None and len(prepared.eval_dataset) > 0
    per_epoch = steps_per_epoch(cfg, n_train, world_size)
    args = build_training_arguments(cfg, n_train, has_eval, cuda, world_size, generation=prepared.generation)
    with fsdp.on_cpu_processes(cuda):
        trainer = hf_trainer.make_trainer(cfg, prepared, args, per_epoch, out=cfg.output_dir, rank=rank, world_size=world_size, cuda=cuda)
    for callback in callbacks:  # the caller's, then the stop signals': checkpoint at the end of the step, stop
        trainer.add_callback(callback)
    total = args.max_steps if args.max_steps > 0 else int(args.num_train_epochs) * per_epoch
    log.info(
        "training on %s: %d rows, %d step(s) (%d per epoch), batch %d x %d process(es) x %d accumulation",
        "GPU" if cuda else "CPU", n_train, total, per_epoch,
        args.per_device_train_batch_size, world_size, args.gradient_accumulation_steps,
    )
    if tracking is not None:
        trainer.add_callback(tracking.callback())
    ranks = placement.gather_ranks(rank)  # the Trainer's arguments started the process group
    if rank == 0:
        placement.log_ranks(ranks)
    return Training(cfg, prepared, trainer, tracking, n_train, has_eval, is_main=rank == 0, ranks=ranks)


def limit_validation_data(cfg: RunConfig, prepared: Prepared, world_size: int) -> None:
    """evaluation.max_eval_steps: keep the validation rows of that many evaluation batches on every process."""
    ev, tr = cfg.spec.evaluation, cfg.spec.training
    if ev.max_eval_steps and prepared.eval_dataset is not None:
        keep = ev.max_eval_steps * tr.per_device_eval_batch_size * max(1, world_size)
        prepared.eval_dataset = prepared.eval_dataset.select(range(min(keep, len(prepared.eval_dataset))))


def evaluate_before_training(training: Training) -> dict[str, float]:
    """Phase evaluate, before: the validation metrics of the model as loaded, as `initial_eval_*`."""
    if not training.has_eval:
        return {}
    initial = zero.evaluate_before_training(training.trainer)
    _show("before training", initial)
    return {f"initial_{k}": v for k, v in initial.items() if k != "epoch"}


def train(training: Training, resume: str | None, preempt: preemption.Preemption) -> dict[str, float] | None:
    """Phase train: the Trainer's training and its metrics (throughput, peak GPU memory); None when a signal stopped it.

    SIGTERM or SIGINT raise Stopped after the checkpoint of the step the signal came in; SLURM's
    requeue signal writes the marker the job script requeues on."""
    trainer = training.trainer
    with disk.writing("a checkpoint", training.checkpoints, training.resume_at, training.checkpoints):
        result = trainer.train(resume_from_checkpoint=resume)
    if preempt.stopped:  # the checkpoint of the step the signal came in is written
        if training.tracking is not None:
            training.tracking.finish("KILLED")
        if not preempt.requeue:
            raise preempt.error(training.resume_at)  # SIGTERM, SIGINT: exit 128 + the signal
        preempt.finish()  # SLURM's requeue signal: the marker file tells the job script to requeue
        return None
    if preempt.pending is not None:
        log.info("%s came after the last training step: the run writes its outputs and ends", preempt.pending.name)
    train_metrics = dict(result.metrics)
    _, tokens, _ = trainer.ftc_throughput.totals(reduce=True)  # every process: sums over them
    if tokens and train_metrics.get("train_runtime"):
        train_metrics["train_tokens_per_second"] = round(tokens / train_metrics["train_runtime"], 3)
    train_metrics.update(peak_gpu_memory())
    return train_metrics


def evaluate_after_training(training: Training) -> tuple[dict[str, float], dict[str, float]]:
    """Phase evaluate, after: (validation metrics of the final model, test metrics)."""
    trainer, prepared = training.trainer, training.prepared
    final: dict[str, float] = {}
    if training.has_eval:
        final = last_evaluation_of_final_model(trainer) or trainer.evaluate()
    test: dict[str, float] = {}
    if prepared.test_dataset is not None:
        if prepared.test_compute_metrics is not None:
            trainer.compute_metrics = prepared.test_compute_metrics
        test = trainer.evaluate(prepared.test_dataset, metric_key_prefix="test")
        _show("test", test, prefix="test_")
    return final, test


def save_final_model(training: Training) -> str:
    """Phase save: the final model (or adapter, or merged model) and ftc_model_info.json next to the checkpoints.

    Returns what was saved, for the log and the MLflow model."""
    cfg, trainer, folder = training.cfg, training.trainer, training.checkpoints
    if not cfg.spec.checkpointing.save_model:
        return NOT_SAVED
    from ftc.runtime.models import model_source

    with disk.writing("the final model", folder, training.resume_at, folder, final_model=True):
        saved = _write_final_model(training, folder)
        if trainer.is_world_process_zero():
            info = {"task": cfg.task, "saved": saved, "base_model": model_source(cfg), **training.prepared.info}
            (folder / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return saved


def _write_final_model(training: Training, folder: Path) -> str:
    """Write the final model into `folder`, every rank taking part where the weights are sharded."""
    from ftc.runtime.lora import is_peft, save_final_model as save_peft_model

    trainer, model = training.trainer, training.trainer.model
    if trainer.is_fsdp_enabled:  # every rank gathers the shards; rank 0 writes
        return fsdp.save_final_model(trainer, folder)
    if is_peft(model) and training.cfg.spec.lora.merge_lora_weights:
        with zero.gathered_parameters(trainer):  # ZeRO-3: every rank gathers the shards, rank 0 merges and writes
            if not trainer.is_world_process_zero():
                return NOT_SAVED
            saved = save_peft_model(model, folder, merge=True)
            training.prepared.tokenizer.save_pretrained(str(folder))
            return saved
    trainer.save_model(str(folder))  # every rank: DeepSpeed gathers; rank 0 writes
    return "adapter" if is_peft(model) else "model"


def report(
    training: Training, final: dict[str, float], others: dict[str, float], saved: str, started: float
) -> dict[str, float]:
    """Phase report: metrics.json, the step log, curves and the MLflow model (rank 0); tracking ends; the summary.

    `final`: the final model's validation metrics; `others`: before training, test data, training."""
    out = training.out
    metrics = {k: v for k, v in jsonable({**final, **others}).items() if isinstance(v, (int, float))}
    artifacts: list[Path] = []
    if training.trainer.is_world_process_zero() and training.is_main:
        out.mkdir(parents=True, exist_ok=True)
        artifacts = _write_metrics(training, metrics)
        if training.cfg.spec.checkpointing.save_as_mlflow_model:  # after everything else: a LoRA model is merged in place
            _write_mlflow_model(training, saved)
    if training.tracking is not None:
        training.tracking.finish("FINISHED", artifacts)
    if training.has_eval and training.is_main:
        _show("after training", final)
        _summary(training.prepared, metrics)
    log.info(
        "saved %s to %s; metrics in %s; %.0f s in all",
        saved, training.checkpoints, out / METRICS_FILE, time.time() - started,
    )
    return metrics


def publish_outputs(cfg: RunConfig, is_main: bool) -> None:
    """Phase publish: a remote output_dir gets the final outputs from the staging folder (rank 0); the
    checkpoints went up as they were saved (callbacks.UploadCheckpoints)."""
    if cfg.output_uri is None or not is_main:
        return
    started = time.time()
    files = storage.upload_folder(cfg.output_dir, cfg.output_uri, skip=_not_published)
    log.info("uploaded %d output file(s) to %s in %.1f s", len(files), cfg.output_uri, time.time() - started)


def _not_published(relative: Path) -> bool:
    """Checkpoints (uploaded as saved), locks, and half-written folders stay out of the final upload."""
    from ftc.runtime.callbacks import CHECKPOINT

    parts = relative.parts
    in_checkpoint = len(parts) > 2 and parts[0] == MODEL_FOLDER and CHECKPOINT.match(parts[1]) is not None
    return in_checkpoint or any(p.startswith(".") for p in parts)


def _upload_callbacks(cfg: RunConfig) -> list[Any]:
    """With a remote output_dir, every saved checkpoint is uploaded (complete ones only, marker last)."""
    if cfg.output_uri is None:
        return []
    from ftc.runtime.callbacks import UploadCheckpoints

    return [UploadCheckpoints(f"{cfg.output_uri.rstrip('/')}/{MODEL_FOLDER}")]


# --------------------------------------------------------------------------- outputs


def _write_metrics(training: Training, metrics: dict[str, float]) -> list[Path]:
    """metrics.json, the step log (tracking.save_metrics) and training_curves.png; returns the files written."""
    from ftc.runtime import outputs

    out, trainer = training.out, training.trainer
    artifacts: list[Path] = []
    with disk.writing(f"{METRICS_FILE} and {outputs.CURVES_FILE}", out, out, training.checkpoints):
        written = {**metrics, "ranks": training.ranks}  # where each rank ran
        (out / METRICS_FILE).write_text(json.dumps(written, indent=2, sort_keys=True) + "\n")
        artifacts.append(out / METRICS_FILE)
        if training.cfg.spec.tracking.save_metrics:  # every log record (loss, learning rate, throughput, evaluations) by step
            (out / STEP_METRICS_FILE).write_text(json.dumps(jsonable(trainer.state.log_history), indent=2) + "\n")
            artifacts.append(out / STEP_METRICS_FILE)
        curves = _training_curves(training, metrics, out / outputs.CURVES_FILE)
        if curves is not None:
            artifacts.append(curves)
    return artifacts


def _write_mlflow_model(training: Training, saved: str) -> None:
    """The MLflow model (checkpointing.save_as_mlflow_model), from the final model where one was saved."""
    from ftc.runtime import outputs

    cfg, out = training.cfg, training.out
    save_model = cfg.spec.checkpointing.save_model
    with zero.rank_zero_loading(), disk.writing("the MLflow model", out / outputs.MLFLOW_FOLDER, out, training.checkpoints):
        outputs.save_mlflow_model(
            cfg.task, training.trainer, training.prepared.tokenizer, out, info=training.prepared.info,
            saved=saved if save_model else "", model_folder=training.checkpoints if save_model else None,
            peft_method=cfg.spec.lora.peft_method,
        )


def _training_curves(training: Training, metrics: dict[str, float], path: Path) -> Path | None:
    """training_curves.png: loss, learning rate, validation metrics, before / after (ftc/runtime/outputs.py)."""
    from ftc.runtime import outputs

    cfg, trainer, name = training.cfg, training.trainer, training.prepared.headline_metric
    before, after = metrics.get(f"initial_eval_{name}"), metrics.get(f"eval_{name}")
    state = trainer.state
    best = getattr(state, "best_global_step", None) if trainer.args.load_best_model_at_end else None
    headline = None
    if before is not None and after is not None:
        headline = f"validation {name}: {before:.4f} before training, {after:.4f} after"
        if best:
            headline += f" (best model: step {best})"
    model = Path(str(cfg.spec.model.model_selector_output)).name or str(cfg.spec.model.model_selector_output)
    facts = _curve_facts(training.n_train, state, metrics, name)
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


def _curve_facts(n_train: int, state: Any, metrics: dict[str, float], name: str) -> list[str]:
    """The facts under the curves: rows, steps, epochs, time, throughput, the test headline metric."""
    facts = [f"{n_train} training rows", f"{state.global_step} steps", f"{state.epoch or 0:.3g} epochs"]
    if metrics.get("train_runtime"):
        facts.append(f"{metrics['train_runtime']:.1f} s")
    if metrics.get("train_samples_per_second"):
        facts.append(f"{metrics['train_samples_per_second']:.1f} samples/s")
    if metrics.get("train_tokens_per_second"):
        facts.append(f"{metrics['train_tokens_per_second']:.0f} tokens/s")
    if metrics.get(f"test_{name}") is not None:
        facts.append(f"test {name} {metrics[f'test_{name}']:.4f}")
    return facts


def _show(when: str, metrics: dict[str, Any], prefix: str = "eval_") -> None:
    """Log one line of metrics: validation before / after training, or the test data's."""
    shown = ", ".join(
        f"{k[len(prefix):]} {v:.4f}"
        for k, v in metrics.items()
        if k.startswith(prefix) and isinstance(v, float) and not k.endswith(("_runtime", "_per_second", "_time"))
    )
    log.info("%s: %s", "test data" if prefix == "test_" else f"validation {when}", shown)


def _summary(prepared: Prepared, metrics: dict[str, float]) -> None:
    """Print the headline metric and the loss before and after training (and log them to the file)."""
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


# --------------------------------------------------------------------------- helpers of the phases


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


def peak_gpu_memory() -> dict[str, float]:
    """train_peak_gpu_memory_gb: the most GPU memory this process's tensors held (none on CPU)."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {"train_peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
