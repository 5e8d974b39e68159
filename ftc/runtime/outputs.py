"""Outputs for people and tools: the MLflow model (`mlflow_model_folder`) and `training_curves.png`.

MLflow model (checkpointing.save_as_mlflow_model, default true). The final model (the best one
when the run evaluates: the Trainer loads it at the end) is saved as an MLflow model that
`mlflow.pyfunc.load_model(path).predict(...)` loads and runs offline:

- text_classification (single-label) and causal_lm: MLflow's transformers flavour, a pipeline of
  the model and tokenizer (`PIPELINE_TASKS`: text-classification, text-generation);
- question_answering, translation, summarization: transformers 5 has no pipelines for these
  tasks any more (it removed question-answering, translation, summarization and
  text2text-generation), so the transformers flavour cannot hold them; they are saved as a
  python_function model whose code is `ftc/runtime/mlflow_model_code.py` (see there for the
  input and output of predict) and whose artifact is the transformers model folder;
- multi-label text_classification (info problem_type multi_label_classification): the same
  python_function model, which returns each text's set of labels above a threshold (the
  pipeline returns one label, or every label's score).

causal_lm's model generates greedily (the text-generation pipeline would sample, 256 new tokens)
up to 128 new tokens and returns the continuation only; predict's params (max_new_tokens,
do_sample, temperature, top_p, num_beams) change that per call. A model trained on chats takes
the rendered prompt (`tokenizer.apply_chat_template(messages, add_generation_prompt=True,
tokenize=False)`) and, as in training, adds no special tokens to it (the template writes them).

A LoRA model is always saved merged into a full model, also when merge_lora_weights is false and
pytorch_model_folder holds the adapter only: a model that serves predictions must not need the
base model from elsewhere. An adapter that cannot be merged (prefix tuning, llama-adapter) gets
no MLflow model, with a warning. pip requirements are explicit (mlflow, torch, transformers,
tokenizers, safetensors, sentencepiece where the tokenizer needs it, pinned to the versions
that trained): MLflow's own inference adds torchvision, which a CPU torch does not have. The
model is written to a staging folder first and then moved into `mlflow_model_folder`, whose
contents it replaces (the folder itself may be a link, as in the Azure ML job).

training_curves.png (rank 0, always): training and validation loss, the validation metrics over
the steps (the evaluation before training is step 0), the learning rate, and the validation
metrics before training and of the final model side by side; a footer with the run's size,
time and throughput. Drawn from `trainer.state.log_history` with matplotlib's Agg backend.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("ftc.runtime")

MLFLOW_FOLDER = "mlflow_model_folder"
CURVES_FILE = "training_curves.png"
# ftc task -> transformers pipeline task of the MLflow transformers flavour.
PIPELINE_TASKS: dict[str, str] = {
    "text_classification": "text-classification",
    "causal_lm": "text-generation",
}
# ftc tasks saved as a python_function model (no transformers 5 pipeline; see the module docstring).
PYFUNC_TASKS: tuple[str, ...] = ("question_answering", "translation", "summarization")
PYFUNC_CODE = Path(__file__).with_name("mlflow_model_code.py")
# ftc_model_info keys the python_function model reads (mlflow_model_code.py).
PYFUNC_CONFIG_KEYS = (
    "source_prefix", "source_lang", "target_lang", "max_seq_length", "generation_max_length",
    "generation_num_beams", "doc_stride", "max_answer_length", "null_answers",
)


class _Skip(Exception):
    """Why no MLflow model is written (logged as a warning)."""


# --------------------------------------------------------------------------- MLflow model


def quiet_mlflow_environment() -> None:
    """MLflow must not contact anything: no usage telemetry (unless the user set it)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def pip_requirements(tokenizer_folder: Path | None = None) -> list[str]:
    """Pinned requirements of the MLflow model (the versions that trained it); local tags (+cpu) dropped."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["mlflow", "torch", "transformers", "tokenizers", "safetensors"]
    if tokenizer_folder is not None and any(tokenizer_folder.glob("*.model")):  # sentencepiece vocabularies
        names += ["sentencepiece", "protobuf"]
    out = []
    for name in names:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            out.append(name)
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's warnings about model cards and licences (a local model has neither) and save progress bars."""
    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger(n) for n in ("mlflow", "mlflow.transformers", "mlflow.models", "mlflow.pyfunc")]
    levels = [lg.level for lg in loggers]
    bars = hf_logging.is_progress_bar_enabled()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():  # "An input example was not provided", type-hint notes
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\..*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def _sharded(trainer: Any) -> bool:
    """Whether the weights in memory are shards (DeepSpeed ZeRO-3, FSDP) rather than the whole model."""
    plugin = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "deepspeed_plugin", None)
    zero3 = getattr(trainer, "is_deepspeed_enabled", False) and getattr(plugin, "zero_stage", 0) == 3
    return bool(zero3 or getattr(trainer, "is_fsdp_enabled", False))


def final_model(trainer: Any, peft_method: str = "lora") -> Any:
    """The trained model as a plain transformers model: unwrapped, and a PEFT adapter merged into it."""
    from ftc.runtime.lora import is_peft

    model = trainer.model
    if is_peft(model):
        try:
            model = model.merge_and_unload()  # in place: training is over
        except (AttributeError, ValueError, NotImplementedError, TypeError) as exc:
            raise _Skip(f"the {peft_method} adapter cannot be merged into the model ({exc})") from None
    return model


def _replace_contents(stage: Path, dest: Path) -> None:
    """Move what `stage` holds into `dest` (created, or emptied first; a link stays a link)."""
    if dest.is_symlink() or dest.is_dir():
        for child in dest.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    else:
        if dest.exists():
            dest.unlink()
        dest.mkdir(parents=True)
    for child in stage.iterdir():
        shutil.move(str(child), str(dest / child.name))
    shutil.rmtree(stage, ignore_errors=True)


def save_mlflow_model(
    task: str,
    trainer: Any,
    tokenizer: Any,
    out: Path,
    info: dict[str, Any] | None = None,
    saved: str = "model",
    model_folder: Path | None = None,
    peft_method: str = "lora",
) -> Path | None:
    """Write `<out>/mlflow_model_folder`; returns it, or None (with a warning) when it cannot be written.

    `saved` and `model_folder` say what pytorch_model_folder holds ("model", "merged", "adapter",
    or nothing): with DeepSpeed ZeRO-3 or FSDP the weights in memory are sharded, so the model is read
    back from that folder.
    """
    dest = out / MLFLOW_FOLDER
    stage = out / f".{MLFLOW_FOLDER}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        pyfunc = task in PYFUNC_TASKS or _multi_label(task, info)
        if task not in PIPELINE_TASKS and not pyfunc:
            raise _Skip(f"ftc has no MLflow model for task {task!r} yet")
        from_folder = _sharded(trainer)
        if from_folder and not (model_folder is not None and saved in ("model", "merged")):
            raise _Skip("with DeepSpeed ZeRO-3 or FSDP the MLflow model is read back from a saved full or merged model")
        quiet_mlflow_environment()
        with _quiet():
            if not pyfunc:
                _save_pipeline(
                    PIPELINE_TASKS[task], trainer, tokenizer, stage, model_folder if from_folder else None, peft_method, info
                )
            else:
                _save_pyfunc(task, trainer, tokenizer, stage, info or {}, model_folder if from_folder else None, peft_method)
        _replace_contents(stage, dest)
    except _Skip as exc:
        shutil.rmtree(stage, ignore_errors=True)
        log.warning("no MLflow model (checkpointing.save_as_mlflow_model): %s", exc)
        return None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("MLflow model (%s) written to %s", "python_function" if pyfunc else "transformers", dest)
    return dest


def _multi_label(task: str, info: dict[str, Any] | None) -> bool:
    return task == "text_classification" and (info or {}).get("problem_type") == "multi_label_classification"


def _save_pipeline(
    pipeline_task: str, trainer: Any, tokenizer: Any, stage: Path, folder: Path | None, peft_method: str,
    info: dict[str, Any] | None = None,
) -> None:
    import mlflow.transformers
    from transformers import pipeline

    if folder is not None:
        pipe = pipeline(pipeline_task, model=str(folder), tokenizer=str(folder), device="cpu")
    else:
        model = final_model(trainer, peft_method)
        pipe = pipeline(pipeline_task, model=model, tokenizer=tokenizer)
    reqs_folder = folder
    if reqs_folder is None:
        vocab = getattr(tokenizer, "vocab_file", None)
        reqs_folder = Path(vocab).parent if isinstance(vocab, str) and vocab.endswith(".model") else None
    extra = _text_generation(info or {}) if pipeline_task == "text-generation" else {}
    mlflow.transformers.save_model(
        transformers_model=pipe, path=str(stage), task=pipeline_task, pip_requirements=pip_requirements(reqs_folder),
        **extra,
    )


# causal_lm's MLflow model: greedy generation, and what predict's params may change (their defaults).
GENERATION_DEFAULTS: dict[str, Any] = {"max_new_tokens": 128, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "num_beams": 1}


def _text_generation(info: dict[str, Any]) -> dict[str, Any]:
    """model_config and signature of a text-generation pipeline model (see the module docstring)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    types = {bool: DataType.boolean, int: DataType.long, float: DataType.double}
    config = {**GENERATION_DEFAULTS, "return_full_text": False}
    if info.get("data_format") == "chat":  # the prompt is a rendered chat template, which writes BOS itself
        config["add_special_tokens"] = False
    signature = ModelSignature(
        inputs=Schema([ColSpec(DataType.string)]),
        outputs=Schema([ColSpec(DataType.string)]),
        # MLflow passes every param, with its default where the call gives none (a None default would be passed)
        params=ParamSchema([ParamSpec(k, types[type(v)], v) for k, v in GENERATION_DEFAULTS.items()]),
    )
    return {"model_config": config, "signature": signature}


def _save_pyfunc(task: str, trainer: Any, tokenizer: Any, stage: Path, info: dict[str, Any], folder: Path | None, peft_method: str) -> None:
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    hf = stage.with_name(stage.name + "-hf")
    shutil.rmtree(hf, ignore_errors=True)
    hf.mkdir(parents=True)
    try:
        if folder is not None:  # top-level files only: no checkpoints, no training state
            for f in folder.iterdir():
                if f.is_file() and f.name not in ("training_args.bin",):
                    shutil.copy2(f, hf / f.name)
        else:
            final_model(trainer, peft_method).save_pretrained(str(hf))
            tokenizer.save_pretrained(str(hf))
        config = {"task": task, **{k: info[k] for k in PYFUNC_CONFIG_KEYS if info.get(k) is not None}}
        if task == "question_answering":
            signature = ModelSignature(
                inputs=Schema([ColSpec(DataType.string, "question"), ColSpec(DataType.string, "context")]),
                outputs=Schema([
                    ColSpec(DataType.string, "answer"), ColSpec(DataType.double, "score"),
                    ColSpec(DataType.long, "start"), ColSpec(DataType.long, "end"),
                ]),
            )
        elif task == "text_classification":  # no input schema: one would drop text_pair or refuse a list of texts
            signature = ModelSignature(
                inputs=None,
                params=ParamSchema([ParamSpec("threshold", DataType.double, 0.5)]),
            )
        else:
            signature = ModelSignature(
                inputs=Schema([ColSpec(DataType.string)]),
                outputs=Schema([ColSpec(DataType.string)]),
                params=ParamSchema([ParamSpec("max_new_tokens", DataType.long, None), ParamSpec("num_beams", DataType.long, None)]),
            )
        mlflow.pyfunc.save_model(
            path=str(stage),
            python_model=str(PYFUNC_CODE),
            artifacts={"hf_model": str(hf)},
            model_config=config,
            signature=signature,
            pip_requirements=[*pip_requirements(hf), "pandas"],
        )
    finally:
        shutil.rmtree(hf, ignore_errors=True)


# --------------------------------------------------------------------------- training_curves.png

# Evaluation keys that are not quality metrics.
_NOT_METRICS = ("_runtime", "_per_second", "_gen_len", "_steps", "_samples", "_time")


def _metric_names(entries: list[dict[str, Any]], prefix: str = "eval_") -> list[str]:
    names: list[str] = []
    for e in entries:
        for k, v in e.items():
            if (
                k.startswith(prefix) and k != f"{prefix}loss" and isinstance(v, (int, float))
                and not k.endswith(_NOT_METRICS) and k not in names
            ):
                names.append(k)
    return names


def _fmt(value: float) -> str:
    if value == 0 or 0.001 <= abs(value) < 10_000:
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.4g}"
    return f"{value:.3g}"


def _si(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.1f}"


def write_training_curves(
    path: Path,
    log_history: list[dict[str, Any]],
    title: str,
    headline: str | None = None,
    best_step: int | None = None,
    facts: list[str] | None = None,
    highlight: str | None = None,
) -> Path | None:
    """Draw `path` (PNG) from a Trainer's log history; returns it, or None when there is nothing to draw.

    `highlight`: the task's headline metric (accuracy, bleu, ...), drawn bold over the others.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("no %s: matplotlib is not installed (pip install matplotlib)", path.name)
        return None

    end = next((i for i, e in enumerate(log_history) if "train_runtime" in e), len(log_history))
    during, after = log_history[:end], log_history[end + 1 :]
    train = [e for e in during if "loss" in e and "step" in e]
    evals = [e for e in during if "eval_loss" in e and "step" in e]
    final = next((e for e in reversed(after) if "eval_loss" in e), None)
    tests = next((e for e in reversed(after) if any(k.startswith("test_") for k in e)), None)
    if not train and not evals:
        log.info("no %s: nothing was logged during training", path.name)
        return None
    metrics = _metric_names(evals)
    has_eval = bool(evals)
    epoch_per_step = next(
        (e["epoch"] / e["step"] for e in reversed(during) if e.get("step") and isinstance(e.get("epoch"), (int, float))), None
    )

    blue, orange, green, grey = "#1f77b4", "#ff7f0e", "#2ca02c", "#7f7f7f"
    with plt.style.context("seaborn-v0_8-whitegrid"):
        if has_eval:
            fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
            ax_loss, ax_metric, ax_lr, ax_bars = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
        else:
            fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
            ax_loss, ax_lr = axes[0], axes[1]
            ax_metric = ax_bars = None

        # loss
        if train:
            ax_loss.plot([e["step"] for e in train], [e["loss"] for e in train], color=blue, lw=1.8,
                         marker="o" if len(train) < 30 else None, ms=3, label="training loss")
        if evals:
            ax_loss.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], color=orange, lw=1.8,
                         marker="o", ms=4, label="validation loss")
        ax_loss.set_title("Loss", loc="left", fontweight="bold")
        ax_loss.set_xlabel("step")
        if best_step is not None and has_eval:
            ax_loss.axvline(best_step, color=green, ls="--", lw=1, label=f"best model (step {best_step})")
        ax_loss.legend(frameon=True, fontsize=9)

        # learning rate
        lr = [e for e in during if "learning_rate" in e and "step" in e]
        if lr:
            ax_lr.plot([e["step"] for e in lr], [e["learning_rate"] for e in lr], color=grey, lw=1.8,
                       marker="o" if len(lr) < 30 else None, ms=3)
            ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        else:
            ax_lr.text(0.5, 0.5, "no learning rate logged", ha="center", va="center", transform=ax_lr.transAxes, color=grey)
        ax_lr.set_title("Learning rate", loc="left", fontweight="bold")
        ax_lr.set_xlabel("step")

        if epoch_per_step:
            for ax in (ax_loss, ax_metric) if has_eval else (ax_loss,):  # not over the rate's 1e-3 multiplier
                top = ax.secondary_xaxis(
                    "top", functions=(lambda s, k=epoch_per_step: s * k, lambda e, k=epoch_per_step: e / k)
                )
                top.set_xlabel("epoch", fontsize=9, color=grey)
                top.tick_params(labelsize=8, colors=grey)

        if has_eval and ax_metric is not None and ax_bars is not None:
            _metric_panel(ax_metric, evals, metrics, best_step, green, f"eval_{highlight}" if highlight else None)
            _bars_panel(ax_bars, evals[0] if evals and evals[0].get("step") == 0 else None, final or evals[-1], metrics,
                        tests, blue, orange, green)

        fig.suptitle(title + (f"\n{headline}" if headline else ""), fontsize=13, fontweight="bold", x=0.01, ha="left")
        if facts:
            fig.text(0.01, 0.01, "  ·  ".join(facts), fontsize=9, color=grey, ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.03 if facts else 0, 1, 0.95 if headline else 0.97))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(str(path), dpi=110)
        plt.close(fig)
    return path


def _metric_panel(
    ax: Any, evals: list[dict[str, Any]], metrics: list[str], best_step: int | None, green: str, highlight: str | None
) -> None:
    ax.set_title("Validation metrics", loc="left", fontweight="bold")
    ax.set_xlabel("step")
    if not metrics:
        ax.text(0.5, 0.5, "validation loss only", ha="center", va="center", transform=ax.transAxes, color="#7f7f7f")
        return
    values = {m: [e.get(m) for e in evals] for m in metrics}
    small = [m for m in metrics if all(v is None or abs(v) <= 1.0 for v in values[m])]
    large = [m for m in metrics if m not in small]
    steps = [e["step"] for e in evals]
    lines = []
    for i, m in enumerate(small):
        bold = m == highlight
        (line,) = ax.plot(steps, values[m], marker="o", ms=5 if bold else 3.5, lw=3 if bold else 1.4, color=f"C{i}",
                          label=m[len("eval_"):], zorder=3 if bold else 2, alpha=1.0 if bold else 0.85)
        lines.append(line)
    other = ax
    if large:
        other = ax.twinx() if small else ax
        for i, m in enumerate(large):
            (line,) = other.plot(steps, values[m], marker="s", ms=4, lw=1.8, ls="--" if small else "-",
                                 color=f"C{len(small) + i}", label=m[len("eval_"):])
            lines.append(line)
        positive = [v for m in large for v in values[m] if v is not None and v > 0]
        if positive and max(positive) / max(min(positive), 1e-12) > 50:
            other.set_yscale("log")
        if small:
            other.grid(False)
            other.set_ylabel(", ".join(m[len("eval_"):] for m in large) + " (dashed)", fontsize=9)
    if small:
        lo = min(v for m in small for v in values[m] if v is not None)
        ax.set_ylim(min(0.0, lo - 0.05), 1.02)
    if best_step is not None:
        ax.axvline(best_step, color=green, ls="--", lw=1)
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=9, frameon=True, loc="lower right")


def _bars_panel(
    ax: Any, before: dict[str, Any] | None, after: dict[str, Any], metrics: list[str], tests: dict[str, Any] | None,
    blue: str, orange: str, green: str,
) -> None:
    names = ["eval_loss", *metrics][:8]
    series = [("before training", before, "#c7c7c7"), ("final model", after, orange)]
    if tests:
        series.append(("test data", {k.replace("test_", "eval_", 1): v for k, v in tests.items()}, green))
    series = [(label, entry, color) for label, entry, color in series if entry]
    n = len(series)
    height = 0.8 / max(n, 1)
    for i, (label, entry, color) in enumerate(series):
        ys = [j + (i - (n - 1) / 2) * height for j in range(len(names))]
        vals = [entry.get(m) for m in names]
        # Each metric on its own scale: bars as a share of the largest value of that metric.
        tops = [max((abs(e.get(m) or 0.0) for _, e, _ in series), default=1.0) or 1.0 for m in names]
        widths = [abs(v) / t if isinstance(v, (int, float)) and not math.isnan(v) else 0 for v, t in zip(vals, tops)]
        ax.barh(ys, widths, height=height * 0.92, color=color, label=label)
        for y, w, v in zip(ys, widths, vals):
            if isinstance(v, (int, float)):
                ax.text(w + 0.01, y, _fmt(v), va="center", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([m[len("eval_"):] + (" (lower is better)" if m == "eval_loss" else "") for m in names], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.22)
    ax.set_xticks([])
    ax.grid(False)
    ax.set_title("Before and after", loc="left", fontweight="bold")
    ax.legend(fontsize=9, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(series), frameon=False)
