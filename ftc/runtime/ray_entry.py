"""The ray target's entrypoint: the shared runtime under Ray Train.

`python -m ftc.runtime.ray_entry [--output_dir DIR] [--<parameter> VALUE ...]`, run by a Ray job
(job.yaml or the KubeRay RayJob written by `ftc compile --target ray`). It reads `FTC_RAY_JOB`, a
JSON document from the job's runtime_env:

    {"config": <ftc.resolved.json>, "env": <env.vars>, "spec_root": <the spec's folder, relative to the
     working dir>, "secrets": [<names>], "train": {num_workers, use_gpu, accelerator_type, resources_per_worker,
     placement_strategy, storage_path, storage_default, run_name, num_to_keep, max_failures, trainer_resources}}

then starts a `TorchTrainer` whose workers each run the shared trainer (ftc.runtime.trainer.run;
Ray Train has set up the process group: gloo on CPU, nccl on GPU). env.vars references (`${NAME}`) are
expanded by Ray on the node; the entrypoint and every worker empty those Ray leaves unset (an unset
`${lower_case}`), so each value is what bash would give (ftc.spec.env_values). With `FTC_CHECK=rendezvous`
(env.vars, or the nodes' environment) the workers join a gloo process group, all-reduce, print their rank
and the GPU ids Ray gave them, and stop: no data, no model, no CUDA call. Every checkpoint the Trainer
saves is reported to Ray Train by rank 0 (`ray.train.report`, after a barrier so that every rank
has written its part). When Ray Train restarts the worker group after a failure
(FailureConfig.max_failures), each worker copies the last checkpoint Ray recorded into its
output folder, drops newer local checkpoints that Ray never recorded, and resumes from it.

Relative paths of the config resolve against the spec's folder inside the job's working dir (the
worker's current folder on every node: RAY_CHDIR_TO_TRIAL_DIR is set to 0), which holds only the files the
job reads (its data and DeepSpeed files; ftc/backends/ray.py); models and URIs are read where they are. The arguments override parameters as for
`python -m ftc.runtime`. The run is named `<name>-<UTC time>` under storage_path, so a new job
never picks up an old run's checkpoints; with checkpointing.resume_from_checkpoint it is named
`<name>`, and a job submitted again resumes from that run's last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftc.contract import CHECK_ENV, CHECKS, CONFIG_NAME, MODEL_FOLDER
from ftc.contract import RAY_ENTRY_MODULE as PROG
from ftc.contract import RAY_JOB_ENV as JOB_ENV
from ftc.errors import FtcError
from ftc.runtime.config import RunConfig, load_config, parse_args
from ftc.runtime.errors import UsageError
from ftc.spec import env_values

CHECKPOINT_PREFIX = "checkpoint-"

USAGE = f"""\
usage: python -m {PROG} [--output_dir DIR] [--<parameter> VALUE ...]

Runs the finetune of a Ray job written by `ftc compile --target ray` under Ray Train. The config
and the Ray Train settings come from the {JOB_ENV} environment variable (job.yaml's runtime_env);
the arguments override parameters as for `python -m ftc.runtime`.
"""

log = logging.getLogger("ftc.runtime.ray")  # the workers' lines (Ray forwards them to the job's log)


def _worker_logging() -> None:
    """Show this module's INFO lines on the worker's stderr (once, whatever the root logger does)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[ftc] %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _say(message: str) -> None:
    """A line of the driver's (the job's own) log."""
    print(f"[ftc] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the job document


def read_job(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The FTC_RAY_JOB document; UsageError when it is missing or not what ftc writes."""
    text = (os.environ if environ is None else environ).get(JOB_ENV)
    if not text:
        raise UsageError(
            f"{JOB_ENV} is not set: run this module as the entrypoint of the Ray job in job.yaml "
            "(ftc submit SPEC --target ray, or the Ray job SDK with job.yaml's runtime_env)"
        )
    try:
        job = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{JOB_ENV} is not JSON: {exc}") from None
    if not isinstance(job, dict) or not {"config", "train"} <= set(job):
        raise UsageError(f"{JOB_ENV} is not a job document written by ftc compile --target ray")
    return job


def expanded(name: str, value: str, environ: Mapping[str, str]) -> str:
    """The env.vars value `value` of `name` as Ray left it in `environ`, with what Ray leaves of unset references
    emptied, as bash would: env_values.expand(value) in the environment the job started in.

    Ray's runtime_env expands the `${NAME}` references ftc sends (os.path.expandvars, on the node) and then
    empties the unset `${UPPERCASE}` ones only: an unset `${lower_case}` stays as it is. A name Ray did not set
    (the entrypoint run by hand) is expanded here.
    """
    if name not in environ:
        return env_values.expand(value, environ)
    result = environ[name]
    for ref in env_values.references(value):
        if ref not in environ:
            result = result.replace(f"${{{ref}}}", "")
    return result


def apply_env(job: dict[str, Any], environ: MutableMapping[str, str] | None = None) -> None:
    """Give env.vars their values with references expanded: finish what Ray's runtime_env began."""
    env = os.environ if environ is None else environ
    values = {name: expanded(str(name), str(value), env) for name, value in (job.get("env") or {}).items()}
    env.update(values)


def check_mode(environ: Mapping[str, str] | None = None) -> str | None:
    """FTC_CHECK (env.vars, or the cluster's environment): the check to run instead of training, or None."""
    check = (os.environ if environ is None else environ).get(CHECK_ENV) or None
    if check is not None and check not in CHECKS:
        raise UsageError(f"{CHECK_ENV}={check!r} is not a check; the one there is: {', '.join(CHECKS)}")
    return check


def missing_secrets(job: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [name for name in job.get("secrets", []) if not env.get(name)]


def check_secrets(job: dict[str, Any], where: str) -> None:
    missing = missing_secrets(job)
    if missing:
        raise UsageError(
            f"the secret(s) {', '.join(missing)} (env.secrets) are not set in the environment of {where}; "
            "set them on the cluster's nodes (e.g. export them before `ray start`, or from a Kubernetes Secret)"
        )


def spec_root(job: dict[str, Any], cwd: Path | None = None) -> Path:
    """The spec's folder on this node: the job's working dir (this process's folder) joined with spec_root."""
    return Path(os.path.normpath((cwd or Path.cwd()) / str(job.get("spec_root", "."))))


@contextmanager
def loaded_config(job: dict[str, Any], argv: list[str]) -> Iterator[RunConfig]:
    """The RunConfig of the job with the command-line overrides; relative paths resolve on this node.

    load_config reads a file: the config is written to a temporary folder of this process, with
    base_dir set to the spec's folder here, and removed afterwards.
    """
    args = parse_args(argv)
    if args.config:
        raise UsageError(f"{PROG} reads its config from {JOB_ENV}; --config is not used")
    config = {**job["config"], "base_dir": str(spec_root(job))}
    folder = Path(tempfile.mkdtemp(prefix="ftc-ray-"))
    try:
        path = folder / CONFIG_NAME
        path.write_text(json.dumps(config), encoding="utf-8")
        yield load_config(path, args.overrides)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def storage_path(train: dict[str, Any], cfg: RunConfig) -> str:
    """RunConfig.storage_path: a URI or absolute path as given, relative to the spec's folder, or <output_dir>/ray_train."""
    value = train.get("storage_path")
    if not value:
        return str(cfg.output_dir / str(train.get("storage_default") or "ray_train"))
    if "://" in value or os.path.isabs(value):
        return str(value)
    return os.path.normpath(cfg.root / value)


def run_name(train: dict[str, Any], cfg: RunConfig, now: float | None = None) -> str:
    name = str(train.get("run_name") or cfg.derived.get("name") or "ftc")
    if cfg.spec.checkpointing.resume_from_checkpoint:
        return name
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"


# --------------------------------------------------------------------------- the driver


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if parse_args(argv).help:
            print(USAGE, end="")
            return 0
        job = read_job()
        apply_env(job)
        check_mode()
        check_secrets(job, "the Ray job's driver")
        with loaded_config(job, argv) as cfg:  # bad overrides fail here, before any worker starts
            return fit(job, argv, cfg)
    except FtcError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def fit(job: dict[str, Any], argv: list[str], cfg: RunConfig) -> int:
    """Run the TorchTrainer; 0 when training finished, 1 when Ray Train gave up."""
    check = check_mode()
    if check:
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every worker's line in the job's log (read when ray is imported)
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig as RayRunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    train = job["train"]
    if train.get("trainer_resources"):
        _say("targets.ray.trainer_resources is ignored: Ray Train V2 reserves nothing for its controller")
    storage = storage_path(train, cfg)
    name = run_name(train, cfg)
    # Keep the workers in the job's working dir, where relative paths resolve (Ray Train would
    # move them to a folder of the run).
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"job": job, "argv": argv, "check": check},
        # The check runs on gloo: no NCCL or CUDA call, so it proves the GPUs Ray gives on any machine.
        torch_config=TorchConfig(backend="gloo") if check else None,
        scaling_config=ScalingConfig(
            num_workers=int(train["num_workers"]),
            use_gpu=bool(train["use_gpu"]),
            resources_per_worker=dict(train.get("resources_per_worker") or {}) or None,
            placement_strategy=str(train.get("placement_strategy") or "PACK"),
            accelerator_type=train.get("accelerator_type"),
        ),
        run_config=RayRunConfig(
            name=name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(num_to_keep=train.get("num_to_keep")),
            failure_config=FailureConfig(max_failures=int(train.get("max_failures", 0))),
        ),
    )
    _say(
        f"Ray Train: {train['num_workers']} worker(s), use_gpu {bool(train['use_gpu'])}, "
        f"accelerator_type {train.get('accelerator_type')}, resources per worker {train.get('resources_per_worker')}, "
        f"max_failures {train.get('max_failures', 0)}; run {name} in {storage}"
        + (f"; {CHECK_ENV}={check}: no training" if check else "")
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as exc:
        _say(f"Ray Train gave up: {exc}")
        return 1
    checkpoint = getattr(result, "checkpoint", None)
    _say(f"training finished; Ray Train's last checkpoint: {checkpoint.path if checkpoint else 'none'}")
    return 0


# --------------------------------------------------------------------------- the workers


def train_loop(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: the shared trainer, checkpoints reported to Ray, resumed after a restart."""
    import ray.train

    _worker_logging()
    job, argv = loop_config["job"], list(loop_config["argv"])
    apply_env(job)
    rank = ray.train.get_context().get_world_rank()
    check_secrets(job, f"Ray Train worker {rank}")
    if loop_config.get("check"):
        check_rendezvous()
        return
    with loaded_config(job, argv) as cfg:
        restored = ray.train.get_checkpoint()
        if restored is not None:
            step = restore_checkpoint(restored, cfg.output_dir / MODEL_FOLDER, rank)
            cfg.spec.checkpointing.resume_from_checkpoint = True  # the runtime resumes from the newest checkpoint
            if rank == 0:
                log.info("resuming from Ray Train's last checkpoint (step %d, %s)", step, restored.path)
        run_runtime(cfg, [report_callback(rank)])


def check_rendezvous() -> None:
    """FTC_CHECK=rendezvous in a Ray Train worker: all-reduce over the process group Ray Train set up, print
    the rank and the GPUs Ray gave this worker; no data, no model."""
    import ray
    import ray.train
    import torch
    import torch.distributed as dist

    context = ray.train.get_context()
    total = torch.ones(1)
    dist.all_reduce(total)
    world = context.get_world_size()
    if int(total.item()) != world:
        raise UsageError(f"{CHECK_ENV}=rendezvous: the all-reduce gave {int(total.item())}, not the world size {world}")
    gpus = ",".join(str(g) for g in ray.get_gpu_ids())
    print(
        f"ftc check rendezvous: rank {context.get_world_rank()}/{world} local_rank {context.get_local_rank()} "
        f"node {context.get_node_rank()} ray_gpu_ids={gpus} CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}",
        flush=True,
    )


def run_runtime(cfg: RunConfig, callbacks: list[Any]) -> dict[str, float]:
    """ftc.runtime.trainer.run with extra Trainer callbacks (Ray Train's reports and checkpoints)."""
    from ftc.runtime import trainer

    return trainer.run(cfg, callbacks=callbacks)


def _step(path: Path) -> int | None:
    name = path.name
    if not name.startswith(CHECKPOINT_PREFIX) or not name[len(CHECKPOINT_PREFIX) :].isdigit():
        return None
    return int(name[len(CHECKPOINT_PREFIX) :])


def restore_checkpoint(checkpoint: Any, folder: Path, rank: int) -> int:
    """Put Ray's last checkpoint into `folder` as checkpoint-<step> and drop newer local ones; returns the step.

    Newer local checkpoints were written after the last one Ray recorded (the failure came before
    the report): resuming from them could put the ranks of different nodes at different steps.
    """
    with checkpoint.as_directory() as source:
        state = Path(source) / "trainer_state.json"
        try:
            step = int(json.loads(state.read_text(encoding="utf-8"))["global_step"])
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"Ray Train's checkpoint {checkpoint.path} has no readable trainer_state.json: {exc}") from None
        folder.mkdir(parents=True, exist_ok=True)
        for path in folder.iterdir():
            newer = _step(path)
            if newer is not None and newer > step:
                if rank == 0:
                    log.info("dropping %s: newer than the last checkpoint Ray Train recorded (step %d)", path.name, step)
                shutil.rmtree(path, ignore_errors=True)
        target = folder / f"{CHECKPOINT_PREFIX}{step}"
        if not (target / "trainer_state.json").exists():
            shutil.rmtree(target, ignore_errors=True)  # a half-written copy
            staging = folder / f".{target.name}.restoring-{rank}-{os.getpid()}"
            shutil.copytree(source, staging)
            try:
                os.rename(staging, target)
            except OSError:  # another worker of this node put it there first
                shutil.rmtree(staging, ignore_errors=True)
    return step


def report_metrics(log_history: list[dict[str, Any]], step: int, epoch: float | None) -> dict[str, float]:
    """The latest value of every number the Trainer logged, with the step: what the checkpoint is reported with."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[key] = value
    metrics["step"] = step
    if epoch is not None:
        metrics["epoch"] = float(epoch)
    return metrics


def report_callback(rank: int) -> Any:
    """A TrainerCallback that reports each saved checkpoint to Ray Train (rank 0 uploads it)."""
    from transformers import TrainerCallback

    class ReportCheckpoints(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            import ray.train
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank has written its part (RNG state) of the checkpoint
            folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            checkpoint = None
            if rank == 0 and (folder / "trainer_state.json").exists():
                checkpoint = ray.train.Checkpoint.from_directory(str(folder))
            ray.train.report(report_metrics(state.log_history, state.global_step, state.epoch), checkpoint=checkpoint)
            if checkpoint is not None:
                log.info("reported %s to Ray Train", folder.name)
            return control

    return ReportCheckpoints()


if __name__ == "__main__":
    # Run through the package module, so that Ray pickles train_loop by reference to
    # ftc.runtime.ray_entry (importable on every node) and not by value from __main__.
    from ftc.runtime.ray_entry import main as _main

    sys.exit(_main())
