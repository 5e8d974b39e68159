"""Experiment tracking: MLflow always (an embedded SQLite store by default), Weights & Biases when asked.

MLflow. The tracking URI is, in order: tracking.tracking_uri (a URI, or a folder path, which
means a file store); the MLFLOW_TRACKING_URI environment variable (Azure ML jobs set it to their
workspace); else `sqlite:///<output_dir>/mlflow.db`, with the runs' artifacts in
`<output_dir>/mlartifacts` (`mlflow ui --backend-store-uri sqlite:///<output_dir>/mlflow.db`
shows them; any SQLite store keeps its artifacts in `mlartifacts` next to it, not in ./mlruns). The experiment is tracking.experiment_name, else MLFLOW_EXPERIMENT_NAME, else the
spec's name. One MLflow run per training run (named after the spec): the spec's parameters as
params, every log record of the Trainer as metrics at its step (the evaluation before training
is step 0; the final evaluation and test metrics come at the last step), and at the end
metrics.json and training_curves.png as artifacts. When MLFLOW_RUN_ID is set (Azure ML) the
metrics go to that run, which ftc neither creates nor ends. A run that resumes from a checkpoint
in the same output folder continues its MLflow run (`ftc_tracking.json` remembers it).

ftc logs through an MlflowClient with an explicit URI instead of the Trainer's `report_to
mlflow`: that callback ends its run when training ends (before ftc's final evaluation), and sets
the process-wide tracking URI and active run, which leak from one in-process run to the next.
MLflow's usage telemetry is turned off (MLFLOW_DISABLE_TELEMETRY, unless set): nothing is sent
anywhere but the tracking URI. A file store URI sets MLFLOW_ALLOW_FILE_STORE, which MLflow 3
needs for it. A tracking store that cannot be opened stops the run before training, with the
URI in the message; an error while logging during training is a warning, and training goes on.
Database errors are one line (the DB-API message, e.g. SQLite's "database or disk is full"): MLflow's
own traceback of an error it raises is filtered out. A run that fails, or stops on a signal, is
marked FAILED or KILLED even when its artifacts cannot be stored.

Weights & Biases (tracking.use_wandb): `wandb.init` with tracking.wandb_config (project, entity,
job_type, tags, group, notes, mode), the spec as config, files under the output folder; mode
`offline` when WANDB_API_KEY is not set (unless wandb_config.mode says otherwise). The wandb
package is not an ftc dependency: without it, use_wandb is a clear error before training.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ftc.runtime.config import RunConfig
from ftc.runtime.errors import RuntimeUserError
from ftc.spec.secrets import mask_secrets

log = logging.getLogger("ftc.runtime")

DEFAULT_DB = "mlflow.db"
ARTIFACTS = "mlartifacts"
RUN_FILE = "ftc_tracking.json"
_METRIC_NAME = re.compile(r"[^0-9A-Za-z_\-. :/]")


def check_wandb(cfg: RunConfig) -> None:
    """use_wandb without the wandb package: an error before anything is loaded."""
    if cfg.spec.tracking.use_wandb and importlib.util.find_spec("wandb") is None:
        raise RuntimeUserError(
            "tracking.use_wandb needs the wandb package, which is not installed: pip install wandb "
            "(or set use_wandb: false; MLflow tracking is always on)"
        )


def tracking_uri(cfg: RunConfig, out: Path) -> tuple[str, str]:
    """(MLflow tracking URI, where it came from)."""
    given = cfg.spec.tracking.tracking_uri
    if given:
        if ":" not in given:  # a folder: MLflow's file store
            folder = cfg.path("tracking", "tracking_uri")
            assert folder is not None
            return folder.as_uri(), "tracking.tracking_uri"
        return given, "tracking.tracking_uri"
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env, "MLFLOW_TRACKING_URI"
    return f"sqlite:///{out.resolve() / DEFAULT_DB}", "default"


def experiment_name(cfg: RunConfig) -> str:
    return (
        cfg.spec.tracking.experiment_name
        or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        or str(cfg.derived.get("name") or cfg.spec.name or f"{cfg.task}_finetune")
    )


def spec_params(cfg: RunConfig) -> dict[str, str]:
    """The spec's parameters, flattened (`training.learning_rate`), as MLflow params."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif value is not None:
            flat[prefix] = json.dumps(value) if isinstance(value, (list, bool)) else str(value)

    walk("", cfg.spec.model_dump(mode="json", exclude={"targets", "lint"}))
    return flat


def _numbers(logs: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in logs.items():
        if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"):
            out[_METRIC_NAME.sub("_", k)] = float(v)
    return out


class MlflowTracker:
    """One MLflow run of a training run, written through an MlflowClient."""

    def __init__(self, cfg: RunConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.uri, self.source = tracking_uri(cfg, out)
        self.experiment = experiment_name(cfg)
        self.client: Any = None
        self.run_id: str | None = None
        self.owned = True  # ftc created the run, so ftc ends it
        self.broken = False

    def start(self, resume: bool) -> None:
        from ftc.runtime.outputs import quiet_mlflow_environment

        quiet_mlflow_environment()
        if self.uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        import mlflow  # noqa: F401  (configures its loggers, which the next lines quieten)

        for name in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..."
            logging.getLogger(name).setLevel(logging.WARNING)
        _quiet_caught_database_errors()
        try:
            self._start(resume)
        except RuntimeUserError:
            raise
        except Exception as exc:  # MlflowException, sqlalchemy errors, connection errors
            raise RuntimeUserError(f"cannot open the MLflow tracking store {self.uri} ({self.source}): {reason(exc)}") from None
        log.info("MLflow tracking: experiment %r, run %s, at %s", self.experiment, self.run_id, self.uri)

    def _start(self, resume: bool) -> None:
        from mlflow.entities import Param, RunStatus
        from mlflow.tracking import MlflowClient
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        self.client = client = MlflowClient(tracking_uri=self.uri)
        env_run = os.environ.get("MLFLOW_RUN_ID")
        if env_run:
            self.run_id, self.owned = env_run, False
            client.get_run(env_run)
            return
        previous = self._previous_run() if resume else None
        if previous:
            self.run_id = previous
            client.update_run(previous, status=RunStatus.to_string(RunStatus.RUNNING))
            log.info("continuing MLflow run %s", previous)
            return
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            exp_id = client.create_experiment(self.experiment, artifact_location=self._artifact_location())
        else:
            exp_id = exp.experiment_id
        name = str(self.cfg.derived.get("name") or self.cfg.task)
        tags = {
            "ftc.task": self.cfg.task,
            "ftc.model": str(self.cfg.spec.model.model_selector_output),
            "ftc.output_dir": str(self.out),
            "ftc.version": _ftc_version(),
        }
        run = client.create_run(exp_id, run_name=name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in spec_params(self.cfg).items()]
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(self.run_id, params=params[i : i + MAX_PARAMS_TAGS_PER_BATCH])
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / RUN_FILE).write_text(
            json.dumps({"mlflow_tracking_uri": mask_secrets(self.uri), "mlflow_run_id": self.run_id, "experiment": self.experiment}, indent=2)
            + "\n"
        )

    def _artifact_location(self) -> str | None:
        """A local SQLite store keeps its runs' artifacts next to it (MLflow's default is ./mlruns in the
        current directory); other stores choose their own."""
        if not self.uri.startswith("sqlite:///"):
            return None
        db = Path(self.uri[len("sqlite:///"):])
        return (db.resolve().parent / ARTIFACTS).as_uri()

    def _previous_run(self) -> str | None:
        try:
            saved = json.loads((self.out / RUN_FILE).read_text())
        except (OSError, ValueError):
            return None
        if saved.get("mlflow_tracking_uri") != mask_secrets(self.uri) or saved.get("experiment") != self.experiment:
            return None
        run_id = saved.get("mlflow_run_id")
        try:
            self.client.get_run(run_id)
        except Exception:
            return None
        return str(run_id)

    def log(self, values: dict[str, Any], step: int) -> None:
        if self.broken or self.run_id is None:
            return
        import time

        from mlflow.entities import Metric

        numbers = _numbers(values)
        if not numbers:
            return
        now = int(time.time() * 1000)
        try:
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in numbers.items()])
        except Exception as exc:
            self.broken = True
            log.warning("MLflow logging to %s failed (%s); training goes on without it", self.uri, reason(exc))

    def finish(self, status: str, artifacts: list[Path]) -> None:
        if self.run_id is None or self.client is None:
            return
        run_id, self.run_id = self.run_id, None
        try:
            for path in artifacts:
                if path.is_file():
                    self.client.log_artifact(run_id, str(path))
        except Exception as exc:  # a full disk, say: the run still gets its status
            log.warning("MLflow: could not store the artifacts of run %s (%s)", run_id, reason(exc))
        try:
            if self.owned:
                self.client.set_terminated(run_id, status=status)
        except Exception as exc:
            log.warning("MLflow: could not mark run %s %s at %s (%s)", run_id, status, self.uri, reason(exc))


class WandbTracker:
    """A W&B run (tracking.use_wandb)."""

    def __init__(self, cfg: RunConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.run: Any = None

    def start(self, resume: bool) -> None:
        import wandb

        w = self.cfg.spec.tracking.wandb_config
        mode = w.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        folder = self.out / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=w.project, entity=w.entity, job_type=w.job_type, tags=w.tags, group=w.group, notes=w.notes,
                mode=mode, dir=str(self.out), name=str(self.cfg.derived.get("name") or self.cfg.task),
                config=spec_params(self.cfg),
            )
        except Exception as exc:
            first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise RuntimeUserError(f"cannot start the W&B run (tracking.wandb_config, mode {mode}): {first}") from None
        log.info("W&B tracking: project %r, mode %s%s", w.project, mode,
                 " (no WANDB_API_KEY)" if mode == "offline" and not w.mode else "")

    def log(self, values: dict[str, Any], step: int) -> None:
        numbers = _numbers(values)
        if self.run is not None and numbers:
            try:
                self.run.log(numbers, step=step)
            except Exception as exc:
                log.warning("W&B logging failed (%s)", exc)

    def finish(self, status: str, artifacts: list[Path]) -> None:
        run, self.run = self.run, None
        if run is not None:
            try:
                run.finish(exit_code=0 if status == "FINISHED" else 1)
            except Exception as exc:
                log.warning("W&B: could not finish the run (%s)", exc)


class Tracking:
    """Every tracker of a run (rank 0 only); `callback()` feeds them the Trainer's log records."""

    def __init__(self, cfg: RunConfig, out: Path) -> None:
        self.trackers: list[Any] = [MlflowTracker(cfg, out)]
        if cfg.spec.tracking.use_wandb:
            check_wandb(cfg)
            self.trackers.append(WandbTracker(cfg, out))
        self.step = 0

    @property
    def mlflow(self) -> MlflowTracker:
        return self.trackers[0]  # type: ignore[no-any-return]

    def start(self, resume: bool = False) -> Tracking:
        for t in self.trackers:
            t.start(resume)
        return self

    def log(self, values: dict[str, Any], step: int) -> None:
        self.step = max(self.step, step)
        for t in self.trackers:
            t.log(values, step)

    def callback(self) -> TrainerCallback:
        return _TrackingCallback(self)

    def finish(self, status: str = "FINISHED", artifacts: list[Path] | None = None) -> None:
        """End the runs (FINISHED, FAILED or KILLED), logging `artifacts` first; a second call does nothing."""
        for t in self.trackers:
            t.finish(status, artifacts or [])


class _TrackingCallback(TrainerCallback):
    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            self.tracking.log(logs, state.global_step)


def reason(exc: BaseException) -> str:
    """One line about `exc`: the database's own message of an SQLAlchemy error in its chain, else its first line."""
    cause: BaseException | None = exc
    while cause is not None:
        orig = getattr(cause, "orig", None)  # the DB-API error (sqlite3.OperationalError: database or disk is full)
        if isinstance(orig, BaseException) and str(orig).strip():
            return str(orig).strip().splitlines()[0]
        cause = cause.__cause__
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class _CaughtDatabaseError(logging.Filter):
    """MLflow logs a traceback for a database error it then raises; ftc reports the raised error in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SQLAlchemy database error")


def _quiet_caught_database_errors() -> None:
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _CaughtDatabaseError) for f in logger.filters):
        logger.addFilter(_CaughtDatabaseError())


def _ftc_version() -> str:
    try:
        from ftc import __version__

        return str(__version__)
    except ImportError:
        return "unknown"
