"""The ray target: a Ray job that runs the shared runtime under Ray Train, and a KubeRay RayJob.

`ftc compile SPEC --target ray -o build/` writes `build/ray/`:

- `job.yaml`: the Ray job. `submit_job` holds the keyword arguments of
  `ray.job_submission.JobSubmissionClient.submit_job`: the `entrypoint`
  (`<python> -m ftc.runtime.ray_entry`, shell-quoted) and the `runtime_env`: `working_dir` (the spec's
  folder by default) with `excludes`, `env_vars` (env.vars, and `FTC_RAY_JOB`) and `pip`. `address` is
  targets.ray.address. Relative paths in job.yaml are relative to its own folder.

What travels with the job: only the local files it reads. `excludes` leaves out everything of the working
dir but the spec's relative data files (train, validation and test files; the preprocess_output folder when
a split has no file of its own) and its DeepSpeed file (with apply_deepspeed), gitignore patterns that Ray's
packaging applies (`/*`, `!/.`, then `!/data`, `/data/*`, `!/data/train.jsonl`, ...), then targets.ray.excludes;
so the relative paths resolve on the cluster as they do here, and a folder holding model weights or other
data next to the spec is not packed. When the job reads no local file (its data are URIs or absolute paths)
there is no working_dir: nothing is uploaded. Models (model, tokenizer_name, lora.from_peft_checkpoint) never
travel: they are read from a URI or an absolute path every node sees; a relative one is warned about (FTC413).
Ray's dashboard refuses a request over 100 MiB (HTTP 413), and Ray packs without compression: lint adds up the
files that would travel (symlinks followed) and errs over 100 MiB, naming the biggest, and warns from 50 MiB
(FTC412). A relative file outside targets.ray.working_dir cannot travel (FTC414). A `.gitignore` is not applied
(data folders are often git-ignored): `ftc submit` packs with RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1, and job.yaml's
SDK command sets it too. A `.rayignore` still leaves out what it names, as Ray does for every job: lint warns of
one in the working dir or on the way to a file the job reads (FTC415).
- `kuberay-rayjob.yaml`: a KubeRay `RayJob` (apiVersion ray.io/v1) that creates a cluster of
  resources.nodes worker pods, runs the same entrypoint and runtime_env, and deletes the cluster
  afterwards.
- `ftc.resolved.json` and `manifest.json`, as for every target.

`FTC_RAY_JOB` carries ftc.resolved.json, env.vars and the Ray Train settings (JSON) to the cluster:
a working dir cannot be relied on to hold the build folder, and a KubeRay cluster sees no local file
at all (the JSON writes `$` as `\\u0024`: Ray expands `${NAME}` in env_vars). The entrypoint
(`ftc/runtime/ray_entry.py`) starts a `TorchTrainer` with `ScalingConfig(num_workers, use_gpu,
resources_per_worker, accelerator_type, placement_strategy)` and `RunConfig(storage_path,
CheckpointConfig(num_to_keep), FailureConfig(max_failures))`; every worker runs the shared trainer (DDP:
gloo on CPU, nccl on GPU) and reports each checkpoint it saves to Ray Train. A worker group restarted
after a failure resumes from the last checkpoint Ray recorded.

GPUs: requests come from the build's Job (ftc/backends/plan.py). On ray `resources.device: auto` (the
default) means one GPU per process, as `gpu` does; `cpu` asks for none. Ray Train runs
num_workers = nodes x processes_per_node workers, `use_gpu` (targets.ray.use_gpu overrides it),
`resources_per_worker` = {CPU: the job's CPUs per process (8 per GPU process, 1 per CPU one, or
resources.cpus_per_process)} plus targets.ray.worker_resources, and `accelerator_type` =
resources.accelerator_type (Ray's names: A10G, A100-80G, H100, ...) or the X of an Anyscale-style
`worker_resources: {"accelerator_type:X": 0.001}`, which also makes the workers GPU workers. Workers
are placed with targets.ray.placement_strategy, PACK by default: Ray fills a node's GPUs before the next
node's, which on nodes of processes_per_node GPUs gives processes_per_node workers per node.

The KubeRay cluster has one worker pod per node (replicas = resources.nodes) that asks, in requests
and limits, for `nvidia.com/gpu` = processes_per_node, cpu = the job's CPUs per node, and memory =
resources.memory (its K/M/G/T are binary: Ki/Mi/Gi/Ti), else 32Gi per GPU plus 32Gi per GPU for each
thing the spec keeps in CPU memory: optimizer states (deepspeed offload_optimizer) and parameters
(deepspeed offload_param with ZeRO-3); fsdp_cpu_offload counts as both (a CPU job: 8Gi).
targets.ray.worker_pod_resources replaces all of it. A GPU job uses the GPU image
`rayproject/ray:<ray_version>-gpu` (a CPU job `rayproject/ray:<ray_version>`; targets.ray.image
replaces both), tolerates the `nvidia.com/gpu` NoSchedule taint of GPU nodes, and with an accelerator
type is kept to its nodes by a node affinity on GPU feature discovery's `nvidia.com/gpu.product` label:
T4, V100, A10G, A10, L4, L40S, A100 (40 or 80 GB), A100-40G, A100-80G, H100 (SXM, PCIe, NVL), H200 and
B200 map to the product names the NVIDIA GPU operator writes (e.g. A100-80G: NVIDIA-A100-SXM4-80GB or
NVIDIA-A100-80GB-PCIe); targets.ray.node_selector replaces the affinity (other labels, other types).
The worker group declares the Ray resource `accelerator_type:X` (Ray detects A100 on its own, not
A100-80G). A pod asking for more than 8 GPUs (e.g. `num_devices: 16` without nodes) is warned about
(FTC409): set resources.nodes.

The GPU example below (2 nodes x 8 A100-80G) gives 16 Ray Train workers with `use_gpu: true`,
`accelerator_type: A100-80G` and 8 CPUs each, and a RayJob of 2 worker pods of
`rayproject/ray:<ray_version>-gpu`, each asking for 8 `nvidia.com/gpu`, 64 CPUs and 256Gi.

env.vars: `$NAME` and `${NAME}` references are sent to Ray as `${NAME}`, which Ray's runtime_env
expands on the node; the entrypoint and every worker then empty what Ray leaves of unset ones, so each
value is what bash gives on the slurm and local targets (empty when unset).

Check mode: with `FTC_CHECK: rendezvous` in env.vars (or in the nodes' environment) the workers join a
gloo process group, all-reduce, print their rank, the GPU ids Ray gave them and CUDA_VISIBLE_DEVICES,
and stop without data or a model: a cluster's GPU scheduling, proven on its own.

Secrets (env.secrets) pass by name only: they must be set in the environment of the cluster's
nodes (for `ray start`, or from a Kubernetes Secret in the KubeRay manifest, see
targets.ray.kubernetes_secret); the entrypoint stops with the names of those missing. Their values
are never written to job.yaml nor sent with the job.

`ftc submit SPEC --target ray --address http://HEAD:8265 [-- --output_dir DIR ...]` submits with the
Ray job SDK (the `ray` package: `pip install 'ftc[ray]'`), follows the job's logs until it ends, and
exits 0 when it SUCCEEDED. An address where no Ray dashboard answers fails within seconds.

Outputs: checkpointing.output_dir is a path on the cluster or a URI (s3://...). A relative one resolves inside
the job's copy of the working dir, which Ray deletes after the job; use an absolute path on storage
every node sees, a URI (or --output_dir at submit). Ray Train's checkpoints go to targets.ray.storage_path
(default `<output_dir>/ray_train`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import posixpath
import re
import shlex
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator

from ftc.backends import kubernetes as k8s
from ftc.backends.base import Backend, Say, Submitted, quiet
from ftc.backends.kubernetes import GPU_PRODUCTS, GPU_RESOURCE, PodResources
from ftc.backends.plan import Plan, gpu_memory_gb
from ftc.contract import RAY_ENTRY_MODULE, RAY_JOB_ENV
from ftc.errors import SubmitError
from ftc.spec import env_values
from ftc.spec.fields import Flag, OneLine, Section, one_line, param
from ftc.spec.peek import is_file as peek_is_file
from ftc.spec.peek import local_path, looks_like_hub_id
from ftc.spec.rules.facts import saves_periodically
from ftc.spec.rules.paths import is_relative_path
from ftc.spec.rules.registry import KeyPath, RuleSet, Severity
from ftc.spec.uris import is_uri

JOB_FILE = "job.yaml"
KUBERAY_FILE = "kuberay-rayjob.yaml"
DEFAULT_RAY_VERSION = "2.60.0"  # the Ray release ftc's ray target is tested with
DEFAULT_STORAGE = "ray_train"  # storage_path default: <output_dir>/ray_train
PROBE_TIMEOUT_S = 5.0
FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")

KUBERAY_NAME_MAX = 47  # KubeRay: MaxRayJobNameLength (it appends to the name for the cluster's)
ACCELERATOR_PREFIX = "accelerator_type:"  # Ray's resource of a node's accelerator type (Anyscale's worker_resources)
MAX_GPUS_PER_POD = 8  # the most GPUs a common node has: a pod asking for more waits forever (FTC409)
CPU_POD_MEMORY = "8Gi"  # a CPU job's worker pod without resources.memory
# The most a Ray dashboard accepts in one request (ray_constants.DASHBOARD_CLIENT_MAX_SIZE): a bigger working_dir
# package (a zip, stored uncompressed) is refused with HTTP 413 (FTC412 errs); from UPLOAD_WARNING on, FTC412 warns.
UPLOAD_LIMIT = 100 * 1024**2
UPLOAD_WARNING = 50 * 1024**2


def _address(value: str) -> str:
    one_line(value)
    parsed = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(
            f"{value!r} is not a Ray dashboard address; expected http://HOST:PORT (the dashboard, port 8265 by default)"
        )
    return value


Address = Annotated[str, AfterValidator(_address)]


class RayOptions(Section):
    """Settings of the ray target (job.yaml for the Ray job SDK, kuberay-rayjob.yaml for KubeRay)."""

    # Relative to the spec's folder (FTC120). working_dir is not one: it may be a folder above the spec's (the job
    # uploads the files it reads from it, see `uploads`).
    path_options: ClassVar[tuple[str, ...]] = ("storage_path",)

    address: Address | None = param(
        None,
        "Ray dashboard address that `ftc submit` sends the job to, e.g. http://head:8265; --address overrides it, "
        "and the RAY_ADDRESS environment variable is used when neither is given.",
    )
    python: str = param(
        "python3",
        "Python interpreter on the cluster with ftc[train] and ray[train] installed (an absolute path for a virtual "
        "environment: the job's PATH is the one `ray start` saw).",
        min_length=1,
    )
    pip: list[OneLine] = param(
        description="Pip requirements Ray installs for the job (runtime_env pip), e.g. [\"ftc[train]==0.1.0\"].",
        name="pip",
        aliases=("requirements",),
        default_factory=list,
    )
    working_dir: str | None = param(
        ".",
        "The job's working directory on the cluster (runtime_env working_dir), relative to the spec file; the "
        "default is the spec's folder. Of a local folder only the files the job reads travel: the spec's relative "
        "data files (or preprocess_output folder) and DeepSpeed file, so their relative paths work on the cluster; "
        "models and anything else stay here (lint reports the upload's size against Ray's 100 MiB limit), and when "
        "the job reads no local file nothing is uploaded. A URI (s3://..., https://.../project.zip) is used as it "
        "is (its archive must hold the spec's folder at its top); null uploads nothing (data paths must then exist "
        "on the cluster).",
    )
    excludes: list[OneLine] = param(
        description="Files of working_dir not to upload even when the job reads them (gitignore-style patterns, "
        "runtime_env excludes, after those that leave out every file the job does not read); a relative "
        "checkpointing.output_dir inside working_dir is excluded too.",
        default_factory=lambda: [".git", ".venv", "__pycache__"],
    )
    storage_path: str | None = param(
        None,
        "Where Ray Train persists checkpoints (RunConfig storage_path): a path every node sees, or a URI "
        "(s3://bucket/runs). Relative paths are relative to the spec's folder. Default: <output_dir>/ray_train.",
    )
    max_failures: int = param(
        0,
        "Times Ray Train restarts the worker group after a worker fails (FailureConfig max_failures; -1: no limit); "
        "a restarted group resumes from the last checkpoint.",
        ge=-1,
    )
    num_to_keep: int | None = param(
        None,
        "Checkpoints Ray Train keeps in storage_path, the most recent ones (CheckpointConfig num_to_keep). "
        "Default: checkpointing.save_total_limit, all when that is -1.",
        ge=1,
    )
    use_gpu: Flag | None = param(
        None,
        "Give each Ray Train worker a GPU (ScalingConfig use_gpu). Default: true when the job's device is gpu "
        "(resources.device gpu, or auto: one GPU per process on a cluster) or worker_resources holds an "
        "accelerator_type:X.",
    )
    worker_resources: dict[str, float] = param(
        description="Ray resources per worker, e.g. {'accelerator_type:A10G': 0.001} (Anyscale); also accepted as "
        "targets.ray.worker_resources.",
        default_factory=dict,
    )
    trainer_resources: dict[str, float] = param(
        description="Ray resources of the trainer process (Anyscale); also accepted as targets.ray.trainer_resources.",
        default_factory=dict,
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = param(
        "PACK", "How Ray places the workers on nodes (ScalingConfig placement_strategy)."
    )
    image: OneLine | None = param(
        None,
        "Container image of the KubeRay cluster, with ftc[train] installed (or listed in pip). "
        "Default: rayproject/ray:<ray_version>-gpu for a GPU job, rayproject/ray:<ray_version> for a CPU one.",
    )
    namespace: str | None = param(
        None,
        "Kubernetes namespace of the RayJob; the current one of kubectl when unset.",
        pattern=k8s.DNS_LABEL,
        max_length=k8s.DNS_LABEL_MAX,
    )
    ray_version: str = param(
        DEFAULT_RAY_VERSION,
        "Ray version of the KubeRay cluster (rayClusterSpec.rayVersion); match the image's.",
        pattern=r"^[0-9]+\.[0-9]+\.[0-9]+([.+-][0-9A-Za-z.+-]+)?$",
    )
    kubernetes_secret: str | None = param(
        None,
        "Kubernetes Secret that holds the env.secrets, one key per name; the KubeRay pods read them from it. "
        "Default: <job name>-secrets.",
        pattern=k8s.DNS_SUBDOMAIN,
        max_length=k8s.DNS_SUBDOMAIN_MAX,
    )
    head_pod_resources: PodResources = param(
        description="Kubernetes requests and limits of the KubeRay head pod, which runs the entrypoint but no training.",
        default_factory=lambda: {"cpu": "1", "memory": "4Gi"},
    )
    worker_pod_resources: PodResources | None = param(
        None,
        "Kubernetes requests and limits of each KubeRay worker pod (one per node). Default: cpu = the job's CPUs "
        "per node, memory = resources.memory (in Ki/Mi/Gi/Ti), else 32Gi per GPU plus 32Gi per GPU for each CPU "
        "offload (optimizer, parameters), else 8Gi for a CPU job; nvidia.com/gpu = processes_per_node when use_gpu.",
    )
    node_selector: dict[str, OneLine] | None = param(
        None,
        "Node selector of the KubeRay worker pods (pod nodeSelector), e.g. {cloud.google.com/gke-accelerator: "
        "nvidia-tesla-a100}. Default: a node affinity on GPU feature discovery's nvidia.com/gpu.product label, "
        "for the products of the accelerator type.",
    )


# --------------------------------------------------------------------------- values from the plan


def options(plan: Plan) -> RayOptions:
    return plan.options  # type: ignore[return-value]


def resource_accelerator_types(plan: Plan) -> list[str]:
    """The X of each `accelerator_type:X` in targets.ray.worker_resources (Anyscale's way to ask for a GPU type)."""
    return [k.removeprefix(ACCELERATOR_PREFIX) for k in options(plan).worker_resources if k.startswith(ACCELERATOR_PREFIX)]


def use_gpu(plan: Plan) -> bool:
    """targets.ray.use_gpu, else: the job's device is gpu, or worker_resources names an accelerator type."""
    o = options(plan)
    if o.use_gpu is not None:
        return o.use_gpu
    return plan.job.device == "gpu" or bool(resource_accelerator_types(plan))


def accelerator_type(plan: Plan) -> str | None:
    """Ray's accelerator type of the workers (ScalingConfig accelerator_type): resources.accelerator_type, else
    the one of worker_resources; None for a CPU job."""
    if not use_gpu(plan):
        return None
    return plan.job.accelerator_type or next(iter(resource_accelerator_types(plan)), None)


def cpus_per_worker(plan: Plan) -> int:
    """The job's CPUs per process (8 per GPU process, 1 per CPU one, unless resources.cpus_per_process says)."""
    return plan.job.cpus_per_node // plan.job.processes_per_node


def resources_per_worker(plan: Plan) -> dict[str, float]:
    """CPU = the job's CPUs per process, then targets.ray.worker_resources (which may set CPU itself)."""
    return {"CPU": float(cpus_per_worker(plan)), **{k: float(v) for k, v in options(plan).worker_resources.items()}}


def num_to_keep(plan: Plan) -> int | None:
    o = options(plan)
    if o.num_to_keep is not None:
        return o.num_to_keep
    limit = plan.spec.checkpointing.save_total_limit
    return limit if limit > 0 else None


def spec_dir(plan: Plan) -> str:
    return str(plan.resolved.doc.base_dir)


# --------------------------------------------------------------------------- what the job uploads


@dataclass(frozen=True)
class Upload:
    """A local file or folder the job reads, which travels in its working_dir: the spec key that names it, the
    value as written, and its path inside the working dir (POSIX; None when it lies outside)."""

    key: KeyPath
    value: str
    path: str | None


def local_working_dir(plan: Plan) -> str | None:
    """targets.ray.working_dir when it is a local folder (None: a URI, or no working dir)."""
    wd = options(plan).working_dir
    return None if wd is None or is_uri(wd) else wd


def read_locations(plan: Plan) -> list[tuple[KeyPath, str]]:
    """The spec's locations the job reads besides the model: its data files (the preprocess_output folder when a
    split has no file of its own) and its DeepSpeed file."""
    d, ds = plan.spec.data, plan.spec.deepspeed
    found: list[tuple[KeyPath, str | None]] = [
        (("data", "train_file_path"), d.train_file_path),
        (("data", "validation_file_path"), d.validation_file_path),
        (("data", "test_file_path"), d.test_file_path),
    ]
    if not all(value for _, value in found):
        found.append((("data", "preprocess_output"), d.preprocess_output))
    if ds.apply_deepspeed:
        found.append((("deepspeed", "deepspeed"), ds.deepspeed))
    return [(key, value) for key, value in found if value]


def uploads(plan: Plan) -> list[Upload]:
    """The relative local files and folders the job reads (URIs and absolute paths stay where they are), each with
    its path inside the local working dir; none without a local working dir."""
    wd = local_working_dir(plan)
    if wd is None:
        return []
    here = spec_dir(plan)
    root = os.path.normpath(os.path.join(here, wd))
    found = []
    for key, value in read_locations(plan):
        if is_relative_path(value):
            inside = os.path.relpath(os.path.normpath(os.path.join(here, value)), root)
            outside = inside.split(os.sep)[0] == os.pardir
            found.append(Upload(key, value, None if outside else Path(inside).as_posix()))
    return found


def uploaded_paths(plan: Plan) -> list[str]:
    """The paths inside the working dir that travel with the job, sorted, without repeats."""
    return sorted({u.path for u in uploads(plan) if u.path is not None})


def working_dir_for_job(plan: Plan) -> str | None:
    """runtime_env working_dir as job.yaml writes it: relative to the build folder (job.yaml's), a URI, or None
    when the job reads no local file (nothing is uploaded)."""
    wd = options(plan).working_dir
    if wd is None or is_uri(wd):
        return wd
    if not uploaded_paths(plan):
        return None
    if os.path.isabs(wd):
        return wd
    return posixpath.normpath(posixpath.join(Path(plan.config["base_dir"]).as_posix(), Path(wd).as_posix()))


def spec_root(plan: Plan) -> str:
    """The spec's folder relative to the job's working directory on the cluster (its cwd)."""
    wd = local_working_dir(plan)
    if wd is None or not uploaded_paths(plan):
        return "."
    here = spec_dir(plan)
    return Path(os.path.relpath(here, os.path.normpath(os.path.join(here, wd)))).as_posix()


def _pattern(path: str) -> str:
    """`path` (inside the working dir) as an anchored gitignore pattern that matches it literally."""
    escaped = re.sub(r"([\\*?\[\]])", r"\\\1", path)
    return "/" + (escaped[:-1] + "[ ]" if escaped.endswith(" ") else escaped)  # Ray's pathspec strips even "\\ "


def upload_only(paths: list[str]) -> list[str]:
    """Gitignore patterns (runtime_env excludes) that leave out everything of the working dir but `paths`.

    Ray does not walk into an excluded folder, and the last pattern that matches a path decides: everything at
    the top is excluded (`/*`, but not the working dir itself, `!/.`), then each folder on the way to a path is
    let in and its other entries left out (`!/data`, `/data/*`), then each path is let in (`!/data/train.jsonl`).
    """
    if "." in paths:  # the working dir itself: all of it travels
        return []
    folders = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    found = ["/*", "!/."]
    for folder in sorted(folders, key=lambda f: (f.count("/"), f)):  # a folder before the folders inside it
        found += ["!" + _pattern(folder), _pattern(folder) + "/*"]
    return found + ["!" + _pattern(p) for p in paths]


def excludes(plan: Plan) -> list[str]:
    """Everything of the working dir but the files the job reads (upload_only), then options.excludes and a
    relative output_dir inside the working dir."""
    o = options(plan)
    found = [*upload_only(uploaded_paths(plan)), *o.excludes]
    out, wd = plan.spec.checkpointing.output_dir, local_working_dir(plan)
    if wd is not None and is_relative_path(out):
        here = spec_dir(plan)
        inside = os.path.relpath(os.path.normpath(os.path.join(here, out)), os.path.normpath(os.path.join(here, wd)))
        if inside != "." and not inside.startswith(".."):
            found.append("/" + Path(inside).as_posix() + "/")
    return list(dict.fromkeys(found))


def upload_sizes(plan: Plan) -> list[tuple[KeyPath, str, int]]:
    """(spec key, path inside the working dir, bytes) of every file that would travel with the job, as Ray walks
    them (following symlinks; each file once). Reads the disk: for lint, not for rendering."""
    wd = local_working_dir(plan)
    if wd is None:
        return []
    root = Path(spec_dir(plan)) / wd
    found: dict[str, tuple[KeyPath, str, int]] = {}
    for upload in uploads(plan):
        start = local_path(root, upload.path) if upload.path is not None else None  # None: missing or unreadable
        if start is not None:
            for path, size in _walk(start):
                inside = path.relative_to(root).as_posix()
                found.setdefault(inside, (upload.key, inside, size))
    return list(found.values())


def _walk(path: Path) -> Iterator[tuple[Path, int]]:
    """Each file at or under `path` with its size, symlinks followed, each real folder once (no loops)."""
    if peek_is_file(path):
        yield path, _size(path)
        return
    seen: set[str] = set()
    for folder, dirs, files in os.walk(path, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        for name in sorted(files):
            yield Path(folder) / name, _size(Path(folder) / name)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def train_settings(plan: Plan) -> dict[str, Any]:
    """What ray_entry needs besides the runtime config: the TorchTrainer's settings."""
    o = options(plan)
    return {
        "num_workers": plan.job.world_size,
        "use_gpu": use_gpu(plan),
        "accelerator_type": accelerator_type(plan),
        "resources_per_worker": resources_per_worker(plan),
        "trainer_resources": {k: float(v) for k, v in options(plan).trainer_resources.items()},
        "placement_strategy": o.placement_strategy,
        "storage_path": o.storage_path,
        "storage_default": DEFAULT_STORAGE,
        "run_name": plan.name,
        "num_to_keep": num_to_keep(plan),
        "max_failures": o.max_failures,
    }


def job_payload(plan: Plan) -> str:
    """FTC_RAY_JOB: the runtime config, env.vars and the Ray Train settings, as compact JSON (sorted: reproducible).

    Ray expands $NAME and ${NAME} in runtime_env env_vars (and drops unknown ${NAME}): every `$` is
    written as the JSON escape \\u0024, which JSON readers turn back into `$`; env.vars arrive unexpanded.
    """
    payload = {
        "config": plan.config,
        "env": dict(plan.job.env),
        "spec_root": spec_root(plan),
        "secrets": list(plan.spec.env.secrets),
        "train": train_settings(plan),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.replace("$", "\\u0024")  # `$` only occurs inside JSON strings


def entrypoint(plan: Plan) -> str:
    """The job's shell command (Ray runs it with /bin/sh): every word quoted."""
    return shlex.join([options(plan).python, "-m", RAY_ENTRY_MODULE])


def env_vars(plan: Plan) -> dict[str, str]:
    """env.vars with every reference written `${NAME}`, which Ray expands on the node (ray_entry.apply_env
    empties those Ray leaves, as bash would)."""
    return {name: env_values.braced(value) for name, value in plan.job.env}


def runtime_env(plan: Plan, working_dir: str | None) -> dict[str, Any]:
    o = options(plan)
    env: dict[str, Any] = {}
    if working_dir is not None:
        env["working_dir"] = working_dir
        if not is_uri(working_dir):
            env["excludes"] = excludes(plan)
    env["env_vars"] = {**env_vars(plan), RAY_JOB_ENV: job_payload(plan)}
    if o.pip:
        env["pip"] = list(o.pip)
    return env


def job_metadata(plan: Plan) -> dict[str, str]:
    return {
        "ftc_name": plan.name,
        "ftc_spec": str(plan.config["ftc"]["spec"]),
        "ftc_spec_sha256": plan.resolved.doc.sha256,
        "ftc_version": str(plan.config["ftc"]["version"]),
    }


def job_document(plan: Plan) -> dict[str, Any]:
    """job.yaml: the address and the keyword arguments of JobSubmissionClient.submit_job."""
    return {
        "address": options(plan).address,
        "submit_job": {
            "entrypoint": entrypoint(plan),
            "runtime_env": runtime_env(plan, working_dir_for_job(plan)),
            "metadata": job_metadata(plan),
        },
    }


# --------------------------------------------------------------------------- KubeRay


def rayjob_name(plan: Plan) -> str:
    """The RayJob's name: a DNS-1035 label of at most 47 characters, as KubeRay requires (it derives the
    cluster's and services' names from it)."""
    return k8s.dns_label(plan.name, KUBERAY_NAME_MAX)


def worker_pod_memory(plan: Plan) -> str:
    """The Job's memory per node as a Kubernetes quantity; 8Gi for a CPU job without resources.memory."""
    if plan.job.memory_per_node:
        return k8s.memory_quantity(plan.job.memory_per_node)
    if not use_gpu(plan):
        return CPU_POD_MEMORY
    return f"{gpu_memory_gb(plan.spec, plan.job.processes_per_node)}Gi"  # GPUs that targets.ray asks for, not the Job


def worker_pod_resources(plan: Plan) -> dict[str, str]:
    """One pod per node: the job's CPUs per node, memory for it, and its processes' GPUs."""
    o = options(plan)
    if o.worker_pod_resources is not None:
        return {k: str(v) for k, v in o.worker_pod_resources.items()}
    out = {"cpu": str(plan.job.cpus_per_node), "memory": worker_pod_memory(plan)}
    if use_gpu(plan):
        out[GPU_RESOURCE] = str(plan.job.processes_per_node)
    return out


def image(plan: Plan) -> str:
    """targets.ray.image, else Ray's image of ray_version: its GPU variant (CUDA) for a GPU job."""
    o = options(plan)
    return o.image or f"rayproject/ray:{o.ray_version}{'-gpu' if use_gpu(plan) else ''}"


def gpu_placement(plan: Plan) -> dict[str, Any]:
    """What a worker pod's spec adds for GPUs: the node selector (or an affinity on the GPU product of the
    accelerator type) and a toleration of the nvidia.com/gpu taint of GPU nodes."""
    o = options(plan)
    if not use_gpu(plan):
        return {"nodeSelector": dict(o.node_selector)} if o.node_selector else {}
    return k8s.gpu_placement(GPU_PRODUCTS.get(accelerator_type(plan) or "", ()), o.node_selector)


def kubernetes_secret(plan: Plan) -> str:
    """The Secret the pods read env.secrets from: targets.ray.kubernetes_secret, else `<RayJob name>-secrets`."""
    return options(plan).kubernetes_secret or f"{rayjob_name(plan)}-secrets"


def _container(plan: Plan, name: str, resources: dict[str, str]) -> dict[str, Any]:
    """A container of the KubeRay cluster: the image, `resources` (requests = limits), env.secrets from the Secret."""
    return k8s.container(name, image(plan), resources, plan.spec.env.secrets, kubernetes_secret(plan))


def kuberay_manifest(plan: Plan) -> dict[str, Any]:
    """A RayJob (ray.io/v1): a cluster made for the job, the same entrypoint and runtime_env, then deleted."""
    o = options(plan)
    name = rayjob_name(plan)
    working_dir = o.working_dir if o.working_dir is not None and is_uri(o.working_dir) else None
    env_yaml = _yaml(runtime_env(plan, working_dir))
    metadata: dict[str, Any] = {"name": name}
    if o.namespace:
        metadata["namespace"] = o.namespace
    metadata["annotations"] = {f"ftc.dev/{k.removeprefix('ftc_')}": v for k, v in job_metadata(plan).items()}
    workers = plan.job.nodes
    group: dict[str, Any] = {
        "groupName": "workers",
        "replicas": workers,
        "minReplicas": workers,
        "maxReplicas": workers,
        "rayStartParams": {},
    }
    ray_type = accelerator_type(plan)
    if ray_type:  # Ray detects A100, not A100-80G: the pods declare the type that ScalingConfig asks for
        group["resources"] = {f"{ACCELERATOR_PREFIX}{ray_type}": "1"}
    pod = {"containers": [_container(plan, "ray-worker", worker_pod_resources(plan))], **gpu_placement(plan)}
    group["template"] = {"spec": pod}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": metadata,
        "spec": {
            "entrypoint": entrypoint(plan),
            "runtimeEnvYAML": env_yaml,
            "metadata": job_metadata(plan),
            # The operator posts the job to the dashboard. K8sJobMode would put runtimeEnvYAML on a bash
            # command line in which KubeRay does not quote `$`.
            "submissionMode": "HTTPMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 300,
            "rayClusterSpec": {
                "rayVersion": o.ray_version,
                "headGroupSpec": {
                    # The head runs the entrypoint and Ray Train's controller (no CPU needed), no training worker.
                    "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": {
                        "spec": {"containers": [_container(plan, "ray-head", {k: str(v) for k, v in o.head_pod_resources.items()})]}
                    },
                },
                "workerGroupSpecs": [group],
            },
        },
    }


def _yaml(value: Any) -> str:
    """YAML text from the serializer (the settings of the templates' to_yaml filter)."""
    import yaml

    return yaml.safe_dump(value, sort_keys=False, allow_unicode=False, width=1 << 16)


# --------------------------------------------------------------------------- the backend


RULES: RuleSet[Plan] = RuleSet()


class RayBackend(Backend):
    name = "ray"
    summary = "job.yaml: a Ray job running the runtime under Ray Train (TorchTrainer), and a KubeRay RayJob"
    Options = RayOptions
    rules = RULES
    main_artifact = "job.yaml"
    gpu_artifact = "kuberay-rayjob.yaml"

    def variables(self, plan: Plan) -> dict[str, Any]:
        o = options(plan)
        settings = train_settings(plan)
        return {
            "job": job_document(plan),
            "manifest": kuberay_manifest(plan),
            "num_workers": settings["num_workers"],
            "use_gpu": settings["use_gpu"],
            "accelerator_type": settings["accelerator_type"],
            "worker_pods": plan.job.nodes,
            "pod_gpus": worker_pod_resources(plan).get(GPU_RESOURCE),
            "max_failures": o.max_failures,
            "num_to_keep": settings["num_to_keep"],
            "job_env": RAY_JOB_ENV,
            "local_working_dir": o.working_dir is not None and not is_uri(o.working_dir),
            "upload_count": len(uploaded_paths(plan)),
            "working_dir_uri": o.working_dir is not None and is_uri(o.working_dir),
            "kubernetes_secret": kubernetes_secret(plan),
        }

    def submit(
        self, build_dir: Path, args: list[str], address: str | None = None, *, on_output: Say = quiet, on_status: Say = quiet
    ) -> Submitted:
        """Submit job.yaml with the Ray job SDK and follow its logs to its end (exit code 0 when it SUCCEEDED)."""
        return submit_job(Path(build_dir), args, address, on_output=on_output, on_status=on_status)


# --------------------------------------------------------------------------- checks

_KEY = ("targets", "ray")


@RULES.rule("FTC401", "error", "worker resource out of range")
def _worker_resource_out_of_range(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """worker_resources values must be positive, and an accelerator_type:X value in (0, 1] (a node has 1 of it)."""
    for name, value in options(plan).worker_resources.items():
        key = ("targets", "ray", "worker_resources", name)
        if name.startswith("accelerator_type:") and not 0 < value <= 1:
            yield key, (
                f"is {value}: an accelerator_type resource marks the node type and must be in (0, 1], "
                "e.g. 0.001 (Anyscale); a node has 1 of it"
            )
        elif value <= 0:
            yield key, f"is {value}: Ray resources must be positive"


@RULES.rule("FTC402", "error", "use_gpu unlike the device")
def _use_gpu_unlike_device(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """targets.ray.use_gpu (or an accelerator_type:X worker resource) must agree with the job's device:
    resources.device auto or gpu is one GPU per process on ray, cpu is none."""
    key = (*_KEY, "use_gpu")
    gpu, device, asked_use_gpu = use_gpu(plan), plan.job.device, options(plan).use_gpu
    if gpu and device == "cpu":
        asked = "is true" if asked_use_gpu else "names an accelerator type (GPU workers)"
        yield key if asked_use_gpu else ("targets", "ray", "worker_resources"), (
            f"{asked} but resources.device is cpu: the workers would hold GPUs and train on CPU; "
            "set device: gpu (or auto), or ask for no GPU"
        )
    elif not gpu and device == "gpu":
        yield key, (
            "is false but the job's device is gpu (resources.device auto or gpu: one GPU per process on ray): Ray "
            "would give the workers no GPU and the runtime would stop; remove use_gpu or set device: cpu"
        )


@RULES.rule("FTC403", "error", "GPUs for workers that do not use them")
def _gpus_for_cpu_workers(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """A GPU count in worker_resources needs use_gpu: Ray refuses GPUs for CPU workers."""
    gpus = options(plan).worker_resources.get("GPU")
    if gpus is not None and gpus > 0 and not use_gpu(plan):
        yield ("targets", "ray", "worker_resources", "GPU"), (
            "asks for GPUs but the workers do not use them (use_gpu is false): Ray refuses this; "
            "set resources.device: gpu or remove GPU"
        )


@RULES.rule("FTC404", "warning", "max_failures without periodic checkpoints")
def _max_failures_without_checkpoints(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """max_failures with evaluation_strategy no: a restarted worker group starts over."""
    o = options(plan)
    if o.max_failures != 0 and not saves_periodically(plan.spec):
        yield (*_KEY, "max_failures"), (
            f"is {o.max_failures} but the run writes no periodic checkpoints (evaluation_strategy is no): "
            "a restarted worker group starts over; set evaluation_strategy to epoch or steps"
        )


@RULES.rule("FTC405", "warning", "trainer_resources ignored")
def _trainer_resources_ignored(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """targets.ray.trainer_resources is ignored: Ray Train V2 refuses ScalingConfig(trainer_resources)."""
    if options(plan).trainer_resources:
        yield ("targets", "ray", "trainer_resources"), (
            "is ignored by the ray target: Ray Train V2 (Ray's default Train API) refuses "
            "ScalingConfig(trainer_resources); its controller reserves no resources"
        )


@RULES.rule("FTC406", "warning", "relative output_dir")
def _relative_output_dir(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """A relative checkpointing.output_dir resolves in the job's working dir, which Ray deletes after the job."""
    output_dir = plan.spec.checkpointing.output_dir
    if is_relative_path(output_dir):
        yield ("checkpointing", "output_dir"), (
            f"is relative ({output_dir}): under Ray it resolves inside the job's copy of the working dir on the "
            "cluster, which Ray deletes after the job; use an absolute path every node sees, or --output_dir at submit"
        )


@RULES.rule("FTC407", "warning", "KubeRay image with a local working_dir")
def _kuberay_local_working_dir(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """A KubeRay cluster cannot see a local working_dir: give a URI, or put the folder in the image."""
    o = options(plan)
    if o.image and o.working_dir is not None and not is_uri(o.working_dir):
        yield (*_KEY, "working_dir"), (
            "is a local folder, which a KubeRay cluster cannot see: kuberay-rayjob.yaml runs the job in the "
            "image's folder instead; give a URI (s3://..., https://.../project.zip), or put the spec's folder "
            "in the image and set working_dir: null"
        )


@RULES.rule(
    "FTC409", "warning", "more GPUs in one pod than a node has",
    doc=f"A KubeRay worker pod (one per node) asking for more than {MAX_GPUS_PER_POD} GPUs waits for a node that "
    "does not exist: spread the processes with resources.nodes.",
)
def _too_many_gpus_per_pod(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    res, per_node = plan.spec.resources, plan.job.processes_per_node
    if use_gpu(plan) and per_node > MAX_GPUS_PER_POD and options(plan).worker_pod_resources is None:
        where = "num_devices" if res.num_devices is not None and res.nodes == 1 else "processes_per_node"
        yield ("resources", where), (
            f"puts {per_node} GPU processes on one node: the KubeRay worker pod asks for {per_node} GPUs, more than "
            f"a node has ({MAX_GPUS_PER_POD} at most on common ones); set resources.nodes "
            f"(e.g. nodes: {-(-per_node // MAX_GPUS_PER_POD)})"
        )


@RULES.rule("FTC410", "error", "two accelerator types")
def _two_accelerator_types(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """resources.accelerator_type and an accelerator_type:X in worker_resources must name the same type."""
    job_type, named = plan.job.accelerator_type, resource_accelerator_types(plan)
    if job_type and any(t != job_type for t in named):
        yield ("targets", "ray", "worker_resources"), (
            f"asks for accelerator type {', '.join(named)} but resources.accelerator_type is {job_type}: name one type"
        )


@RULES.rule("FTC411", "warning", "accelerator type without a node label")
def _accelerator_type_without_label(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """ftc knows no nvidia.com/gpu.product value of resources.accelerator_type: the KubeRay worker pods are not
    kept to such nodes unless targets.ray.node_selector says how."""
    ray_type = accelerator_type(plan)
    if ray_type and ray_type not in GPU_PRODUCTS and options(plan).node_selector is None:
        key = ("resources", "accelerator_type") if plan.job.accelerator_type else ("targets", "ray", "worker_resources")
        yield key, (
            f"is {ray_type}, for which ftc knows no nvidia.com/gpu.product node label (it knows "
            f"{', '.join(GPU_PRODUCTS)}): the KubeRay worker pods may land on other GPU nodes; set "
            "targets.ray.node_selector"
        )


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


@RULES.rule(
    "FTC412", "error/warning", "upload over Ray's limit",
    doc=f"The files that travel with the job (the spec's local data and DeepSpeed files, in its working_dir) must "
    f"stay under the {_mib(UPLOAD_LIMIT)} a Ray dashboard accepts in one request (an error above it; Ray answers "
    f"413), and are warned about from {_mib(UPLOAD_WARNING)}: the message gives the size and the biggest files.",
)
def _upload_too_big(plan: Plan) -> Iterator[tuple[KeyPath, str, Severity]]:
    files = sorted(upload_sizes(plan), key=lambda f: (-f[2], f[1]))
    total = sum(size for _, _, size in files)
    if total < UPLOAD_WARNING:
        return
    biggest = ", ".join(f"{path} ({_mib(size)})" for _, path, size in files[:3])
    where = "put the data on storage every node sees and name it there (an s3://, gs://, abfs:// URI or an absolute path)"
    if total > UPLOAD_LIMIT:
        yield files[0][0], (
            f"the Ray job would upload {_mib(total)} (the files it reads, in its working_dir), over the "
            f"{_mib(UPLOAD_LIMIT)} a Ray dashboard accepts (it refuses with 413); the biggest: {biggest}; {where}"
        ), "error"
    else:
        yield files[0][0], (
            f"the Ray job uploads {_mib(total)} (the files it reads, in its working_dir), near the "
            f"{_mib(UPLOAD_LIMIT)} a Ray dashboard accepts; the biggest: {biggest}; for data that grows, {where}"
        ), "warning"


_MODEL_KEYS: tuple[KeyPath, ...] = (
    ("model", "model_selector_output"),
    ("model", "tokenizer_name"),
    ("lora", "from_peft_checkpoint"),
)


@RULES.rule("FTC413", "warning", "local model folder the job does not upload")
def _relative_model_folder(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """A model, tokenizer or adapter folder relative to the spec's folder: the Ray job never uploads models (they
    outgrow Ray's upload limit), so it must be an absolute path every node sees or a URI."""
    if local_working_dir(plan) is None:
        return  # relative paths resolve in a working dir from a URI, or in the nodes' folder: the user's choice
    for key in _MODEL_KEYS:
        value = getattr(getattr(plan.spec, str(key[0])), str(key[1]))
        if value and is_relative_path(value) and _local_folder(plan, value):
            yield key, (
                f"{value!r} is a folder relative to the spec, which the Ray job does not upload (models travel "
                "from storage, not with the job): give an absolute path every node sees, or a storage URI"
            )


def _local_folder(plan: Plan, value: str) -> bool:
    """Whether a relative model value names a local folder: one that exists here, or no hub id (`./m`, `a/b/c`)."""
    return local_path(plan.resolved.doc.base_dir, value) is not None or not looks_like_hub_id(value)


@RULES.rule("FTC414", "error", "file the job reads outside its working_dir")
def _read_outside_working_dir(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """A relative data or DeepSpeed file outside targets.ray.working_dir cannot travel with the job."""
    for upload in uploads(plan):
        if upload.path is None:
            yield upload.key, (
                f"{upload.value!r} lies outside targets.ray.working_dir ({options(plan).working_dir}), so it cannot "
                "travel with the Ray job: move it inside, widen working_dir, or give an absolute path every node sees "
                "or a URI"
            )


RAYIGNORE = ".rayignore"
IGNORE_GITIGNORE = "RAY_RUNTIME_ENV_IGNORE_GITIGNORE"


@RULES.rule("FTC415", "warning", ".rayignore where the job's files travel")
def _rayignore_on_the_way(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """Ray leaves out what a .rayignore lists, in the working dir or a folder below it, on top of the job's excludes:
    one on the way to a file the job reads may drop it, and the job fails on the cluster without it. (A .gitignore
    is not applied: `ftc submit` turns that off, as RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1 does for the Ray SDK.)"""
    wd = local_working_dir(plan)
    if wd is None:
        return
    root = Path(spec_dir(plan), wd)
    for upload in uploads(plan):
        if upload.path is None:
            continue
        folders = [root, *(root / parent for parent in reversed(Path(upload.path).parents[:-1]))]
        found = [folder / RAYIGNORE for folder in folders if (folder / RAYIGNORE).is_file()]
        if found:
            yield upload.key, (
                f"{', '.join(map(str, found))} may leave out {upload.value!r}: Ray applies .rayignore on top of the "
                "job's excludes, and the job cannot read a file that did not travel; make sure it does not list it"
            )


# --------------------------------------------------------------------------- submit


def dashboard_url(address: str) -> str:
    """http://host:port for `host:port`, `http://host:port/` and the like."""
    text = address.strip().rstrip("/")
    return text if "://" in text else f"http://{text}"


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """The Ray version the dashboard at `url` reports; SubmitError within `timeout` seconds when none answers.

    The job SDK's own requests have no time limit: an address that drops packets, or a port
    that accepts connections but never replies, would hang it.
    """
    import socket  # here, not at the top: only submit talks to the network (compile starts faster)
    import urllib.error
    import urllib.request

    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SubmitError(f"{url!r} is not a Ray dashboard address; expected http://HOST:PORT (port 8265 by default)")
    hint = "is the Ray cluster running, and is this its dashboard (port 8265 by default)?"
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=timeout) as response:
            body = response.read(65536)
    except urllib.error.HTTPError as exc:
        raise SubmitError(f"{url} answers but is not a Ray dashboard (HTTP {exc.code} for /api/version); {hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (socket.timeout, TimeoutError)):
            reason = f"no answer within {timeout:g} s"
        raise SubmitError(f"no Ray dashboard answers at {url}: {reason}; {hint}") from None
    try:
        info = json.loads(body)
        return str(info.get("ray_version", "unknown"))
    except (ValueError, AttributeError):
        raise SubmitError(f"{url} answers but is not a Ray dashboard (/api/version is not JSON); {hint}") from None


def load_job(build_dir: Path) -> dict[str, Any]:
    import yaml

    path = build_dir / JOB_FILE
    try:
        job = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SubmitError(f"cannot read {path}: {exc}") from None
    if not isinstance(job, dict) or not isinstance(job.get("submit_job"), dict):
        raise SubmitError(f"{path} is not a job.yaml written by ftc compile --target ray")
    return job


def submission(build_dir: Path, args: list[str]) -> dict[str, Any]:
    """The keyword arguments of submit_job for this build: paths made absolute, runtime arguments appended."""
    job = load_job(build_dir)["submit_job"]
    env = dict(job.get("runtime_env") or {})
    wd = env.get("working_dir")
    if isinstance(wd, str) and not is_uri(wd):
        folder = (build_dir / wd).resolve()
        if not folder.is_dir():
            raise SubmitError(f"the working_dir of {build_dir / JOB_FILE} is not a folder: {folder}")
        env["working_dir"] = str(folder)
    command = str(job["entrypoint"])
    if args:
        command += " " + shlex.join(args)
    return {**job, "entrypoint": command, "runtime_env": env}


def ray_address(job: dict[str, Any], address: str | None) -> str:
    """The dashboard to submit to: --address, job.yaml's address (targets.ray.address), or the environment's."""
    address = address or job.get("address") or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address or address == "auto":
        raise SubmitError(
            "no Ray address: pass --address http://HEAD:8265 (the Ray dashboard), set targets.ray.address, "
            "or set RAY_ADDRESS"
        )
    return dashboard_url(address)


def submit_job(
    build_dir: Path, args: list[str], address: str | None = None, *, on_output: Say = quiet, on_status: Say = quiet
) -> Submitted:
    """Submit the build's job.yaml to the Ray dashboard and follow the job to its end; SubmitError when it cannot.

    The job's logs go to `on_output` as they come. Interrupted while following (Ctrl-C, or the signal
    `ftc submit` ends with), it says how to stop the job, which goes on, and lets the interruption through.
    """
    build_dir = Path(build_dir).resolve()
    url = ray_address(load_job(build_dir), address)
    kwargs = submission(build_dir, args)
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise SubmitError("submitting to Ray needs the ray package: pip install 'ftc[ray]'") from None
    version = probe(url)
    try:
        client = JobSubmissionClient(url)
        with _gitignore_not_applied():
            job_id = client.submit_job(**kwargs)
    except Exception as exc:  # the SDK raises RuntimeError, ConnectionError, ValueError... with Ray's message
        raise SubmitError(f"the Ray cluster at {url} refused the job: {exc}") from None
    submitted = Submitted(RayBackend.name, job_id=job_id, job_kind="Ray job", where=url)
    on_status(f"submitted Ray job {job_id} to {url} (Ray {version}); following its logs")
    try:
        _follow(client, job_id, on_output, on_status)
        status = _wait(client, job_id)
    except (KeyboardInterrupt, SystemExit):
        on_status(f"stopped following; the job goes on. Stop it with: ray job stop --address {url} {job_id}")
        raise
    if status == "SUCCEEDED":
        return dataclasses.replace(submitted, state=status)
    message = getattr(client.get_job_info(job_id), "message", None)  # why it FAILED or was STOPPED
    return dataclasses.replace(submitted, state=status, message=str(message) if message else None, exit_code=1)


@contextlib.contextmanager
def _gitignore_not_applied() -> Iterator[None]:
    """Ray's SDK leaves out of the uploaded working_dir what a .gitignore lists, on top of the job's excludes. Those
    already keep only the files the job reads, which a .gitignore often lists (`data/`): Ray's own switch,
    RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1, turns it off while the job is packed."""
    before = os.environ.get(IGNORE_GITIGNORE)
    os.environ[IGNORE_GITIGNORE] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ[IGNORE_GITIGNORE]
        else:
            os.environ[IGNORE_GITIGNORE] = before


def _follow(client: Any, job_id: str, on_output: Say, on_status: Say) -> None:
    """Pass the job's logs to `on_output` as they come, until it ends (or the log stream breaks)."""
    import asyncio

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            on_output(chunk)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        on_status(f"the log stream of {job_id} broke ({exc}); waiting for the job to end")


def _wait(client: Any, job_id: str, poll_s: float = 1.0) -> str:
    """The job's final state (SUCCEEDED, FAILED or STOPPED), asked for every `poll_s` seconds."""
    while True:
        status = client.get_job_status(job_id)
        state = str(getattr(status, "value", status))
        if state in FINAL_STATES:
            return state
        time.sleep(poll_s)


BACKEND = RayBackend
