"""The slurm target: a batch script for sbatch that starts torchrun on every node with one srun.

`job.sbatch` holds every option as a literal `#SBATCH` line (no shell variables there: SLURM
never expands them), so it can be submitted again with a bare `sbatch`. The body sets up the
environment (modules, a venv or conda env, env.vars), then runs one srun task per node, each
starting `python -m torch.distributed.run` with c10d rendezvous on the first node of the
allocation, at the address SLURM reaches it by (its NodeAddr: the node's name unless slurm.conf
says otherwise). A rank that fails ends the job (srun --kill-on-bad-exit), whose other ranks
would wait for it. With `requeue`, the job asks SLURM for a signal before its time limit, the training
processes write a checkpoint and stop (ftc/runtime/preemption.py), and the script requeues the
job, which resumes from that checkpoint.

Requests come from the build's Job (ftc/backends/plan.py). On slurm `resources.device: auto` means
one GPU per process: `--gpus-per-node` = processes_per_node (`TYPE:N` with resources.accelerator_type,
or a `--constraint` feature with `accelerator_request: constraint`), `--cpus-per-task` = 8 CPUs per
process and `--mem` = 32G per GPU, plus 32G per GPU for each thing kept in CPU memory (DeepSpeed offload,
FSDP cpu offload), unless resources.cpus_per_process / resources.memory say otherwise;
the runtime config says `device: gpu`, so a job on a node without CUDA stops with a clear error.
`device: cpu` asks for no GPU (1 CPU per process unless set, the cluster's default memory).
`targets.slurm.time`, partition, account and qos are written when set.

Check mode: `FTC_CHECK=rendezvous sbatch job.sbatch` runs the job up to the rendezvous only: every
process joins the process group (gloo), all-reduces, prints its rank, the world size,
CUDA_VISIBLE_DEVICES and SLURM_GPUS_ON_NODE, and exits 0 without loading data or a model.

`ftc submit SPEC --target slurm [--address CLUSTER]` runs `sbatch --parsable` (with `--clusters`)
and prints the job id. The job needs the build folder while it runs: a build in the temporary
folder (where `ftc submit` compiles) is first copied to `<spec folder>/.ftc-slurm/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

from ftc.backends.base import Backend, Say, Submitted, quiet
from ftc.backends.plan import Plan
from ftc.contract import CONFIG_NAME
from ftc.errors import SubmitError
from ftc.spec.fields import LINE_BREAK, Flag, OneLine, Section, one_line, param
from ftc.spec.rules.facts import saves_periodically
from ftc.spec.rules.registry import KeyPath, RuleSet, Severity

JOB_SCRIPT = "job.sbatch"
DEFAULT_PORT_BASE = 29500  # master_port unset: 29500 + job id % 2000, below Linux's ephemeral ports
PORT_SPREAD = 2000

# Characters that end or split an #SBATCH line, or that a terminal may show as one: refused in values.
_BARE_WORD = re.compile(r"^[A-Za-z0-9_.,:%@+=/\-\[\]]+$")

_TIME_FORMATS = "minutes (30), minutes:seconds (30:00), hours:minutes:seconds (04:00:00), days-hours (1-0), days-hours:minutes (1-00:00) or days-hours:minutes:seconds (1-00:00:00)"
_TIME = re.compile(
    r"^(?:(?P<m1>\d+)"
    r"|(?P<m2>\d+):(?P<s2>\d{1,2})"
    r"|(?P<h3>\d+):(?P<m3>\d{1,2}):(?P<s3>\d{1,2})"
    r"|(?P<d4>\d+)-(?P<h4>\d{1,2})"
    r"|(?P<d5>\d+)-(?P<h5>\d{1,2}):(?P<m5>\d{1,2})"
    r"|(?P<d6>\d+)-(?P<h6>\d{1,2}):(?P<m6>\d{1,2}):(?P<s6>\d{1,2}))$"
)
_UNLIMITED = ("UNLIMITED", "INFINITE")


def time_seconds(text: str) -> int | None:
    """Seconds of a SLURM time limit in one of its formats; None for UNLIMITED or a bad value."""
    match = _TIME.match(text)
    if match is None:
        return None
    g = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    days = g.get("d4", g.get("d5", g.get("d6", 0)))
    hours = g.get("h3", g.get("h4", g.get("h5", g.get("h6", 0))))
    minutes = g.get("m1", g.get("m2", g.get("m3", g.get("m5", g.get("m6", 0)))))
    seconds = g.get("s2", g.get("s3", g.get("s6", 0)))
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _slurm_time(value: Any) -> Any:
    """A SLURM time limit, as text; a bare number is minutes, as sbatch reads it; refuses `4h`."""
    if isinstance(value, bool):
        raise ValueError(f"expected a SLURM time limit: {_TIME_FORMATS}")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a SLURM time limit: {_TIME_FORMATS}")
    text = value.strip()
    if text.upper() in _UNLIMITED:
        return text.upper()
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"{value!r} is not a SLURM time limit; expected {_TIME_FORMATS}")
    g = {k: int(v) for k, v in match.groupdict().items() if v is not None}
    if any(g.get(k, 0) > 59 for k in ("s2", "s3", "s6", "m3", "m5", "m6")) or any(
        g.get(k, 0) > 23 for k in ("h4", "h5", "h6")
    ):
        raise ValueError(f"{value!r} is out of range: minutes and seconds go up to 59, hours after days up to 23")
    if time_seconds(text) == 0:
        raise ValueError("a time limit of 0 means no limit to SLURM; write UNLIMITED if that is meant")
    return text


def _directive(value: str) -> str:
    one_line(value)
    if not value.startswith("--") or len(value) < 3 or value[2] in " =":
        raise ValueError(f"{value!r} is not an sbatch long option; write it as --option=value (e.g. --mail-type=END)")
    return value


SlurmTime = Annotated[
    str,
    BeforeValidator(_slurm_time),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "pattern": r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE)$",
                },
                {"type": "integer", "minimum": 1, "maximum": 59},
            ]
        }
    ),
]
Directive = Annotated[str, AfterValidator(_directive)]


class SlurmOptions(Section):
    """Settings of the slurm target (job.sbatch for sbatch)."""

    path_options: ClassVar[tuple[str, ...]] = ("venv", "output", "error")  # relative to the spec's folder (FTC120)

    python: OneLine = param(
        "python3",
        "Python interpreter with ftc[train] installed, on the compute nodes (after modules and venv/conda are set "
        "up); the FTC_PYTHON environment variable overrides it.",
    )
    partition: OneLine | None = param(None, "Partition to run in (#SBATCH --partition); the cluster's default when unset.")
    account: OneLine | None = param(None, "Account charged for the job (#SBATCH --account).")
    qos: OneLine | None = param(None, "Quality of service (#SBATCH --qos).")
    constraint: OneLine | None = param(None, "Node features the job needs, e.g. a100&ib (#SBATCH --constraint).")
    time: SlurmTime | None = param(
        None,
        "Time limit (#SBATCH --time) in a SLURM format: minutes, minutes:seconds, hours:minutes:seconds, days-hours, "
        "days-hours:minutes or days-hours:minutes:seconds (\"04:00:00\", \"1-00:00:00\", \"30\"). Quote it in YAML. "
        "The partition's default when unset.",
    )
    gpus_per_node: int | None = param(
        None,
        "GPUs per node (#SBATCH --gpus-per-node). Default: resources.processes_per_node, one GPU per process, when "
        "resources.device is auto or gpu; 0 (no GPU requested) when it is cpu.",
        ge=0,
    )
    accelerator_request: Literal["gres", "constraint"] = param(
        "gres",
        "How resources.accelerator_type is asked for: gres, as the GPU type of --gpus-per-node=TYPE:N (the Type "
        "of the cluster's gres.conf); constraint, as a node feature (--constraint=TYPE, joined to constraint with &).",
    )
    exclusive: Flag = param(False, "Ask for whole nodes, shared with no other job (#SBATCH --exclusive).")
    output: OneLine = param(
        "%x-%j.out",
        "File for the job's standard output (#SBATCH --output), relative to the folder sbatch runs in; %x is the "
        "job name, %j the job id.",
    )
    error: OneLine | None = param(
        None, "File for the job's standard error (#SBATCH --error); with the output when unset."
    )
    extra_directives: list[Directive] = param(
        description="More sbatch options, each written as a literal #SBATCH line: [\"--mail-type=END\", \"--comment=x\"].",
        default_factory=list,
    )
    modules: list[OneLine] = param(
        description="Environment modules to load before training (module load NAME), in order.",
        name="modules",
        aliases=("module_loads",),
        default_factory=list,
    )
    venv: OneLine | None = param(
        None,
        "A Python virtual environment to activate on the compute nodes (its folder; relative to the spec file).",
    )
    conda_env: OneLine | None = param(None, "A conda environment to activate on the compute nodes (name or prefix).")
    container_image: OneLine | None = param(
        None,
        "Run the training processes in this container image with pyxis/enroot (srun --container-image), "
        "e.g. nvcr.io#nvidia/pytorch:24.05-py3.",
    )
    container_mounts: list[OneLine] = param(
        description="Mounts for the container (srun --container-mounts SRC:DST): the spec's folder and the build "
        "folder must be visible at the same paths inside it.",
        default_factory=list,
    )
    requeue: Flag = param(
        False,
        "Handle preemption and time limits: #SBATCH --requeue and --signal; on the signal the training processes "
        "write a checkpoint and stop, the job requeues itself and resumes from that checkpoint.",
    )
    signal: Literal["USR2", "USR1"] = param(
        "USR2",
        "Signal SLURM sends signal_seconds before the time limit when requeue is on (USR2: NCCL may use USR1).",
    )
    signal_seconds: int = param(
        120, "Seconds before the time limit at which the signal is sent; enough to write a checkpoint.", ge=1, le=65535
    )
    master_port: int | None = param(
        None,
        "TCP port of the rendezvous on the first node. Default: 29500 + job id % 2000, so jobs that share a node "
        "do not collide.",
        ge=1024,
        le=65535,
    )


def sbatch_word(value: str) -> str:
    """`value` as one argument of an #SBATCH line: bare when safe, else in double quotes.

    sbatch splits directive lines itself (not the shell): whitespace separates, `#` starts a
    comment, double or single quotes group, and a backslash escapes the next character. Nothing
    is expanded. A line break cannot be quoted, so it is refused.
    """
    if LINE_BREAK.search(value):
        raise ValueError(f"{value!r} cannot be written in an #SBATCH line (it holds a line break or control character)")
    if value and _BARE_WORD.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gpu_request(plan: Plan) -> str | None:
    """The value of --gpus-per-node: N, or TYPE:N with the accelerator type as the gres type; None: no GPU."""
    o: SlurmOptions = plan.options  # type: ignore[assignment]
    job = plan.job
    if job.gpus_per_node == 0:
        return None
    if job.accelerator_type and o.accelerator_request == "gres":
        return f"{job.accelerator_type}:{job.gpus_per_node}"
    return str(job.gpus_per_node)


def constraint(plan: Plan) -> str | None:
    """targets.slurm.constraint, with the accelerator type as a node feature when it is asked for that way."""
    o: SlurmOptions = plan.options  # type: ignore[assignment]
    accelerator = plan.job.accelerator_type if plan.job.gpus_per_node and o.accelerator_request == "constraint" else None
    if accelerator is None or o.constraint is None:
        return accelerator or o.constraint
    return f"{accelerator}&({o.constraint})" if "|" in o.constraint else f"{accelerator}&{o.constraint}"


def directives(plan: Plan) -> list[str]:
    """The #SBATCH options, in order, each as it is written after `#SBATCH `: the Job's requests, then the options."""
    o: SlurmOptions = plan.options  # type: ignore[assignment]
    job = plan.job
    lines = [
        f"--job-name={sbatch_word(plan.name)}",
        f"--nodes={job.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={job.cpus_per_node}",  # one task per node runs all of the node's processes
    ]
    gpus = gpu_request(plan)
    if gpus:
        lines.append(f"--gpus-per-node={sbatch_word(gpus)}")
    if job.memory_per_node:
        lines.append(f"--mem={job.memory_per_node}")
    if job.time_limit:
        lines.append(f"--time={job.time_limit}")
    for option in ("partition", "account", "qos"):
        value = getattr(o, option)
        if value:
            lines.append(f"--{option}={sbatch_word(value)}")
    features = constraint(plan)
    if features:
        lines.append(f"--constraint={sbatch_word(features)}")
    lines.append(f"--output={sbatch_word(o.output)}")
    if o.error:
        lines.append(f"--error={sbatch_word(o.error)}")
    if o.exclusive:
        lines.append("--exclusive")
    if o.requeue:
        lines += ["--requeue", f"--signal=B:{o.signal}@{o.signal_seconds}", "--open-mode=append"]
    lines.append("--export=" + ",".join(["ALL", *job.secrets]))
    lines += list(o.extra_directives)
    return lines


RULES: RuleSet[Plan] = RuleSet()


class SlurmBackend(Backend):
    name = "slurm"
    summary = "job.sbatch: sbatch script; one srun task per node runs torchrun (c10d rendezvous), optional requeue"
    Options = SlurmOptions
    rules = RULES
    main_artifact = "job.sbatch"

    def variables(self, plan: Plan) -> dict[str, Any]:
        o: SlurmOptions = plan.options  # type: ignore[assignment]
        job = plan.job
        return {
            "directives": directives(plan),
            "nodes": job.nodes,
            "nproc": job.processes_per_node,
            "gpus_per_node": job.gpus_per_node,
            "cpus_per_task": job.cpus_per_node,
            "python": o.python,
            "modules": list(o.modules),
            "venv": o.venv,
            "conda_env": o.conda_env,
            "container_image": job.container_image,
            "container_mounts": ",".join(o.container_mounts),
            "base_dir": plan.config["base_dir"],
            "requeue": o.requeue,
            "signal": o.signal,
            "master_port": o.master_port,
            "port_base": DEFAULT_PORT_BASE,
            "port_spread": PORT_SPREAD,
        }

    def submit(
        self, build_dir: Path, args: list[str], address: str | None = None, *, on_output: Say = quiet, on_status: Say = quiet
    ) -> Submitted:
        """Run `sbatch --parsable` on job.sbatch: the job id; `address` is a cluster name (--clusters).

        A build under the system temp folder (where `ftc submit` compiles) is first copied next to the
        spec, to `<spec folder>/.ftc-slurm/<name>-<time>/`: the job runs after ftc exits, and compute
        nodes rarely share the submit host's /tmp.
        """
        sbatch = shutil.which("sbatch")
        if sbatch is None:
            raise SubmitError(
                "sbatch is not installed or not on PATH; submit from a SLURM login node, or install the "
                f"SLURM client (Debian: slurm-client). The job script is {build_dir / JOB_SCRIPT}",
                exit_code=127,
            )
        build_dir = Path(build_dir).resolve()
        config = json.loads((build_dir / CONFIG_NAME).read_text())
        missing = [s for s in config.get("env", {}).get("secrets", []) if not os.environ.get(s)]
        if missing:
            raise SubmitError(f"the secret(s) {', '.join(missing)} must be set in the environment (env.secrets)")
        if _under(build_dir, Path(tempfile.gettempdir())):
            build_dir = stage_build(build_dir, config)
            on_status(f"the job uses the build copied to {build_dir}")
        job_id = _sbatch(sbatch, build_dir, args, address)
        return Submitted(self.name, job_id=job_id, job_kind="SLURM job", where=address, parsable=True)


def _sbatch(sbatch: str, build_dir: Path, args: list[str], cluster: str | None) -> str:
    """Run `sbatch --parsable` on the build's job script: the job id, or SubmitError with sbatch's exit code."""
    cmd = [sbatch, "--parsable"]
    if cluster:
        cmd.append(f"--clusters={cluster}")
    cmd += [str(build_dir / JOB_SCRIPT), *args]
    env = {**os.environ, "FTC_BUILD_DIR": str(build_dir)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip()
        raise SubmitError(f"sbatch failed (exit {result.returncode}): {message}", exit_code=result.returncode)
    return result.stdout.strip().split(";")[0]


# --------------------------------------------------------------------------- checks

_KEY = ("targets", "slurm")


@RULES.rule("FTC301", "error", "GPUs on a CPU run")
def _gpus_on_a_cpu_run(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """gpus_per_node asks for GPUs but resources.device is cpu."""
    gpus = plan.job.gpus_per_node
    if gpus > 0 and plan.job.device == "cpu":
        yield (
            (*_KEY, "gpus_per_node"),
            f"asks for {gpus} GPU(s) per node but resources.device is cpu; set device: gpu (or auto) or gpus_per_node: 0",
        )


@RULES.rule("FTC302", "error", "GPU run without GPUs")
def _gpu_run_without_gpus(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """resources.device gpu or auto (one GPU per process on slurm) needs gpus_per_node above 0; a CPU job says
    device: cpu."""
    if plan.job.device == "gpu" and plan.job.gpus_per_node == 0:
        yield (
            (*_KEY, "gpus_per_node"),
            f"is 0 but resources.device is {plan.spec.resources.device} (one GPU per process on slurm): the job would "
            "get no GPU; set resources.device: cpu for a CPU job, or remove gpus_per_node",
        )


@RULES.rule("FTC303", "error/warning", "processes per node unlike GPUs per node")
def _processes_unlike_gpus(plan: Plan) -> Iterator[tuple[KeyPath, str, Severity]]:
    """An error when processes_per_node is larger than gpus_per_node (processes would share GPUs), a warning
    when smaller (GPUs stay idle)."""
    gpus, processes = plan.job.gpus_per_node, plan.spec.resources.processes_per_node
    if gpus == 0 or plan.job.device != "gpu" or processes == gpus:
        return
    key = ("resources", "processes_per_node")
    if processes > gpus:
        yield key, (
            f"is {processes} but targets.slurm.gpus_per_node is {gpus}: processes would share GPUs; run one process "
            "per GPU"
        ), "error"
    else:
        yield key, (
            f"is {processes} but targets.slurm.gpus_per_node is {gpus}: {gpus - processes} GPU(s) per node stay "
            "idle; run one process per GPU"
        ), "warning"


@RULES.rule("FTC304", "warning", "requeue without periodic checkpoints")
def _requeue_without_checkpoints(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """requeue with evaluation_strategy no: a job stopped without the preemption signal starts over."""
    if _options(plan).requeue and not saves_periodically(plan.spec):
        yield (
            (*_KEY, "requeue"),
            "is on but the run writes no periodic checkpoints (evaluation_strategy is no): only the preemption signal "
            "writes one, and a job stopped without it (node failure) starts over; set evaluation_strategy to epoch "
            "or steps",
        )


@RULES.rule("FTC305", "warning", "signal not before the time limit")
def _signal_after_time_limit(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """signal_seconds must be shorter than the time limit, or the signal comes as the job starts."""
    o = _options(plan)
    limit = time_seconds(o.time) if o.requeue and o.time else None
    if limit is not None and o.signal_seconds >= limit:
        yield (
            (*_KEY, "signal_seconds"),
            f"is {o.signal_seconds} s but the time limit is {limit} s: the signal would come as the job starts; "
            "lower signal_seconds or raise time",
        )


@RULES.rule("FTC306", "warning", "signal settings without requeue")
def _signal_without_requeue(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """signal and signal_seconds apply only with requeue."""
    o = _options(plan)
    if not o.requeue:
        for name in ("signal", "signal_seconds"):
            if name in o.model_fields_set:
                yield (*_KEY, name), "has no effect because targets.slurm.requeue is false"


@RULES.rule("FTC307", "error", "both venv and conda_env")
def _venv_and_conda(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """A job activates one environment: venv or conda_env."""
    o = _options(plan)
    if o.venv and o.conda_env:
        yield (*_KEY, "conda_env"), "cannot be used with venv; activate one environment"


@RULES.rule("FTC308", "error", "host environment with a container")
def _host_environment_in_container(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """venv and conda_env are activated on the host and do not reach the container of container_image."""
    o = _options(plan)
    if o.container_image:
        for name in ("venv", "conda_env"):
            if getattr(o, name):
                yield (
                    (*_KEY, name),
                    "is activated on the host and does not reach the container of container_image; install ftc in "
                    "the image instead",
                )


@RULES.rule("FTC309", "warning", "mounts without a container")
def _mounts_without_container(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """container_mounts apply only with container_image."""
    o = _options(plan)
    if o.container_mounts and not o.container_image:
        yield (*_KEY, "container_mounts"), "has no effect without container_image"


@RULES.rule("FTC310", "warning", "accelerator type on a CPU run")
def _accelerator_type_on_cpu(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """resources.accelerator_type is not requested when the job asks for no GPU (resources.device cpu)."""
    if plan.job.accelerator_type and plan.job.device == "cpu":
        yield ("resources", "accelerator_type"), "is not requested: resources.device is cpu, so the job asks for no GPU"


def _options(plan: Plan) -> SlurmOptions:
    return plan.options  # type: ignore[return-value]


def _under(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def stage_build(build_dir: Path, config: dict[str, Any]) -> Path:
    """Copy a build to `<spec folder>/.ftc-slurm/<name>-<UTC time>/`, its base_dir and manifest updated."""
    spec_dir = (build_dir / config["base_dir"]).resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    name = config.get("derived", {}).get("name", "job")
    target = spec_dir / ".ftc-slurm" / f"{name}-{stamp}-{os.getpid()}"
    shutil.copytree(build_dir, target)
    config = {**config, "base_dir": os.path.relpath(spec_dir, target)}
    text = json.dumps(config, indent=2, ensure_ascii=True) + "\n"
    (target / CONFIG_NAME).write_text(text)
    manifest_path = target / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if CONFIG_NAME in manifest.get("files", {}):
            manifest["files"][CONFIG_NAME] = hashlib.sha256(text.encode()).hexdigest()
            manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=True) + "\n")
    return target


BACKEND = SlurmBackend
