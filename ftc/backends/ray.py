"""The ray target: a Ray job that runs the shared runtime under Ray Train, and a KubeRay RayJob.

`ftc compile SPEC --target ray -o build/` writes `build/ray/`:

- `job.yaml`: the Ray job. `submit_job` holds the keyword arguments of
  `ray.job_submission.JobSubmissionClient.submit_job`: the `entrypoint`
  (`<python> -m ftc.runtime.ray_entry`, shell-quoted) and the `runtime_env`: `working_dir` (the spec's
  folder by default, uploaded by Ray, so relative data and model paths resolve on the cluster as they
  do here), `excludes`, `env_vars` (env.vars, and `FTC_RAY_JOB`) and `pip`. `address` is
  targets.ray.address. Relative paths in job.yaml are relative to its own folder.
- `kuberay-rayjob.yaml`: a KubeRay `RayJob` (apiVersion ray.io/v1) that creates a cluster of
  resources.nodes worker pods, runs the same entrypoint and runtime_env, and deletes the cluster
  afterwards.
- `ftc.resolved.json` and `manifest.json`, as for every target.

`FTC_RAY_JOB` carries ftc.resolved.json, env.vars and the Ray Train settings (JSON) to the cluster:
a working dir cannot be relied on to hold the build folder, and a KubeRay cluster sees no local file
at all. (Ray expands `$NAME` in env_vars: the JSON writes `$` as `\\u0024`, and the entrypoint sets
env.vars again to their literal values.) The entrypoint (`ftc/runtime/ray_entry.py`) starts a `TorchTrainer` with
`ScalingConfig(num_workers = nodes x processes_per_node, use_gpu, resources_per_worker =
resources.worker_resources)` and `RunConfig(storage_path, CheckpointConfig(num_to_keep),
FailureConfig(max_failures))`; every worker runs the shared trainer (DDP: gloo on CPU, nccl on GPU)
and reports each checkpoint it saves to Ray Train. A worker group restarted after a failure resumes
from the last checkpoint Ray recorded.

Secrets (env.secrets) pass by name only: they must be set in the environment of the cluster's
nodes (for `ray start`, or from a Kubernetes Secret in the KubeRay manifest, see
targets.ray.kubernetes_secret); the entrypoint stops with the names of those missing. Their values
are never written to job.yaml nor sent with the job.

`ftc submit SPEC --target ray --address http://HEAD:8265 [-- --output_dir DIR ...]` submits with the
Ray job SDK (the `ray` package: `pip install 'ftc[ray]'`), follows the job's logs until it ends, and
exits 0 when it SUCCEEDED. An address where no Ray dashboard answers fails within seconds.

Outputs: checkpointing.output_dir is a path on the cluster. A relative one resolves inside the
job's copy of the working dir, which Ray deletes after the job; use an absolute path on storage
every node sees (or --output_dir at submit). Ray Train's checkpoints go to targets.ray.storage_path
(default `<output_dir>/ray_train`).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from ftc.backends.base import Backend, TargetRule
from ftc.compiler.plan import Plan
from ftc.spec.fields import Flag, Section, param
from ftc.spec.rules import Finding

JOB_FILE = "job.yaml"
KUBERAY_FILE = "kuberay-rayjob.yaml"
ENTRY_MODULE = "ftc.runtime.ray_entry"
JOB_ENV = "FTC_RAY_JOB"  # = ftc.runtime.ray_entry.JOB_ENV
DEFAULT_RAY_VERSION = "2.60.0"  # the Ray release ftc's ray target is tested with
DEFAULT_STORAGE = "ray_train"  # storage_path default: <output_dir>/ray_train
PROBE_TIMEOUT_S = 5.0
FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")

_RAY_EXPANDS = re.compile(r"\$(\w|\{)")  # what os.path.expandvars (Ray's update_envs) replaces
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
# Kubernetes resource quantity (the CRD's pattern): 1, 500m, 4Gi, 1.5, 2e3
_QUANTITY = re.compile(r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
_K8S_RESOURCE_NAME = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
KUBERAY_NAME_MAX = 47  # KubeRay: MaxRayJobNameLength (it appends to the name for the cluster's)


def is_uri(value: str) -> bool:
    """`s3://...`, `gs://...`, `https://.../x.zip`: a remote location rather than a local path."""
    return bool(_URI.match(value))


def _one_line(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must be one line (no newline or control character)")
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _address(value: str) -> str:
    _one_line(value)
    parsed = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(
            f"{value!r} is not a Ray dashboard address; expected http://HOST:PORT (the dashboard, port 8265 by default)"
        )
    return value


def _pod_resources(value: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, quantity in value.items():
        if not _K8S_RESOURCE_NAME.match(name):
            raise ValueError(f"{name!r} is not a Kubernetes resource name (cpu, memory, nvidia.com/gpu, ...)")
        text = str(quantity)
        if isinstance(quantity, bool) or not _QUANTITY.match(text):
            raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity (e.g. 2, 500m, 8Gi)")
        out[name] = text
    return out


OneLine = Annotated[str, AfterValidator(_one_line)]
Address = Annotated[str, AfterValidator(_address)]
PodResources = Annotated[dict[str, str | int | float], AfterValidator(_pod_resources)]


class RayOptions(Section):
    """Settings of the ray target (job.yaml for the Ray job SDK, kuberay-rayjob.yaml for KubeRay)."""

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
        "Folder Ray uploads as the job's working directory (runtime_env working_dir), relative to the spec file; "
        "the default is the spec's folder, so relative data and model paths work on the cluster. A URI "
        "(s3://..., https://.../project.zip) is used as it is (its archive must hold the spec's folder at its top); "
        "null uploads nothing (data and model paths must then exist on the cluster).",
    )
    excludes: list[OneLine] = param(
        description="Files of working_dir not to upload (gitignore-style patterns, runtime_env excludes); a relative "
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
        "Give each Ray Train worker a GPU (ScalingConfig use_gpu). Default: true when resources.device is gpu.",
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = param(
        "PACK", "How Ray places the workers on nodes (ScalingConfig placement_strategy)."
    )
    image: OneLine | None = param(
        None,
        "Container image of the KubeRay cluster, with ftc[train] installed (or listed in pip). "
        "Default: rayproject/ray:<ray_version>.",
    )
    namespace: str | None = param(
        None, "Kubernetes namespace of the RayJob; the current one of kubectl when unset.", pattern=_DNS_LABEL, max_length=63
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
        pattern=_DNS_SUBDOMAIN,
        max_length=253,
    )
    head_pod_resources: PodResources = param(
        description="Kubernetes requests and limits of the KubeRay head pod, which runs the entrypoint but no training.",
        default_factory=lambda: {"cpu": "1", "memory": "4Gi"},
    )
    worker_pod_resources: PodResources | None = param(
        None,
        "Kubernetes requests and limits of each KubeRay worker pod (one per node). Default: cpu = "
        "processes_per_node x cpus_per_process (1 when unset), memory = resources.memory (8Gi when unset), "
        "nvidia.com/gpu = processes_per_node when use_gpu.",
    )


# --------------------------------------------------------------------------- values from the plan


def options(plan: Plan) -> RayOptions:
    return plan.options  # type: ignore[return-value]


def use_gpu(plan: Plan) -> bool:
    o = options(plan)
    return o.use_gpu if o.use_gpu is not None else plan.spec.resources.device == "gpu"


def resources_per_worker(plan: Plan) -> dict[str, float]:
    """resources.worker_resources, plus CPU = cpus_per_process when it is not there."""
    res = plan.spec.resources
    out = {k: float(v) for k, v in res.worker_resources.items()}
    if res.cpus_per_process and "CPU" not in out:
        out["CPU"] = float(res.cpus_per_process)
    return out


def num_to_keep(plan: Plan) -> int | None:
    o = options(plan)
    if o.num_to_keep is not None:
        return o.num_to_keep
    limit = plan.spec.checkpointing.save_total_limit
    return limit if limit > 0 else None


def spec_dir(plan: Plan) -> str:
    return str(plan.resolved.doc.base_dir)


def working_dir_for_job(plan: Plan) -> str | None:
    """runtime_env working_dir as job.yaml writes it: relative to the build folder (job.yaml's), or a URI."""
    wd = options(plan).working_dir
    if wd is None or is_uri(wd) or os.path.isabs(wd):
        return wd
    return posixpath.normpath(posixpath.join(Path(plan.config["base_dir"]).as_posix(), Path(wd).as_posix()))


def spec_root(plan: Plan) -> str:
    """The spec's folder relative to the job's working directory on the cluster (its cwd)."""
    wd = options(plan).working_dir
    if wd is None or is_uri(wd):
        return "."
    here = spec_dir(plan)
    return Path(os.path.relpath(here, os.path.normpath(os.path.join(here, wd)))).as_posix()


def excludes(plan: Plan) -> list[str]:
    """options.excludes, plus a relative output_dir that lies inside the working dir."""
    o = options(plan)
    found = list(o.excludes)
    out = plan.spec.checkpointing.output_dir
    if o.working_dir is not None and not is_uri(o.working_dir) and not os.path.isabs(out):
        here = spec_dir(plan)
        inside = os.path.relpath(os.path.normpath(os.path.join(here, out)), os.path.normpath(os.path.join(here, o.working_dir)))
        if inside != "." and not inside.startswith(".."):
            found.append("/" + Path(inside).as_posix() + "/")
    return list(dict.fromkeys(found))


def train_settings(plan: Plan) -> dict[str, Any]:
    """What ray_entry needs besides the runtime config: the TorchTrainer's settings."""
    o = options(plan)
    return {
        "num_workers": plan.world_size,
        "use_gpu": use_gpu(plan),
        "resources_per_worker": resources_per_worker(plan),
        "trainer_resources": {k: float(v) for k, v in plan.spec.resources.trainer_resources.items()},
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
    written as the JSON escape \\u0024, which JSON readers turn back into `$`.
    """
    payload = {
        "config": plan.config,
        "env": dict(sorted(plan.spec.env.vars.items())),
        "spec_root": spec_root(plan),
        "secrets": list(plan.spec.env.secrets),
        "train": train_settings(plan),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.replace("$", "\\u0024")  # `$` only occurs inside JSON strings


def entrypoint(plan: Plan) -> str:
    """The job's shell command (Ray runs it with /bin/sh): every word quoted."""
    return shlex.join([options(plan).python, "-m", ENTRY_MODULE])


def runtime_env(plan: Plan, working_dir: str | None) -> dict[str, Any]:
    o = options(plan)
    env: dict[str, Any] = {}
    if working_dir is not None:
        env["working_dir"] = working_dir
        if not is_uri(working_dir):
            env["excludes"] = excludes(plan)
    env["env_vars"] = {**dict(sorted(plan.spec.env.vars.items())), JOB_ENV: job_payload(plan)}
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


def kubernetes_name(name: str) -> str:
    """The RayJob's name: a DNS-1035 label (lower case, '-' for other characters, a letter first) of at
    most 47 characters, as KubeRay requires (it derives the cluster's and services' names from it)."""
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not text[:1].isalpha():
        text = f"ftc-{text}"
    return text[:KUBERAY_NAME_MAX].rstrip("-")


def _memory_quantity(memory: str | None) -> str:
    if not memory:
        return "8Gi"
    return memory[:-1] + "k" if memory.endswith("K") else memory  # Kubernetes writes kilo as k


def worker_pod_resources(plan: Plan) -> dict[str, str]:
    o = options(plan)
    if o.worker_pod_resources is not None:
        return {k: str(v) for k, v in o.worker_pod_resources.items()}
    res = plan.spec.resources
    out = {"cpu": str(res.processes_per_node * (res.cpus_per_process or 1)), "memory": _memory_quantity(res.memory)}
    if use_gpu(plan):
        out["nvidia.com/gpu"] = str(res.processes_per_node)
    return out


def kubernetes_secret(plan: Plan) -> str:
    return options(plan).kubernetes_secret or f"{kubernetes_name(plan.name)}-secrets"


def _container(plan: Plan, name: str, image: str, resources: dict[str, str], secret: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "resources": {"requests": dict(resources), "limits": dict(resources)},
    }
    secrets = plan.spec.env.secrets
    if secrets:
        container["env"] = [
            {"name": s, "valueFrom": {"secretKeyRef": {"name": secret, "key": s}}} for s in secrets
        ]
    return container


def kuberay_manifest(plan: Plan) -> dict[str, Any]:
    """A RayJob (ray.io/v1): a cluster made for the job, the same entrypoint and runtime_env, then deleted."""
    o = options(plan)
    name = kubernetes_name(plan.name)
    image = o.image or f"rayproject/ray:{o.ray_version}"
    secret = kubernetes_secret(plan)
    working_dir = o.working_dir if o.working_dir is not None and is_uri(o.working_dir) else None
    env_yaml = _yaml(runtime_env(plan, working_dir))
    metadata: dict[str, Any] = {"name": name}
    if o.namespace:
        metadata["namespace"] = o.namespace
    metadata["annotations"] = {f"ftc.dev/{k.removeprefix('ftc_')}": v for k, v in job_metadata(plan).items()}
    workers = plan.spec.resources.nodes
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
                        "spec": {"containers": [_container(plan, "ray-head", image, {k: str(v) for k, v in o.head_pod_resources.items()}, secret)]}
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": workers,
                        "minReplicas": workers,
                        "maxReplicas": workers,
                        "rayStartParams": {},
                        "template": {
                            "spec": {"containers": [_container(plan, "ray-worker", image, worker_pod_resources(plan), secret)]}
                        },
                    }
                ],
            },
        },
    }


def _yaml(value: Any) -> str:
    """YAML text from the serializer (the settings of the templates' to_yaml filter)."""
    import yaml

    return yaml.safe_dump(value, sort_keys=False, allow_unicode=False, width=1 << 16)


# --------------------------------------------------------------------------- the backend


class RayBackend(Backend):
    name = "ray"
    summary = "job.yaml: a Ray job running the runtime under Ray Train (TorchTrainer), and a KubeRay RayJob"
    Options = RayOptions
    rules = (
        TargetRule(
            "FTC401", "error", "worker resource out of range",
            "worker_resources values must be positive, and an accelerator_type:X value in (0, 1] (a node has 1 of it).",
        ),
        TargetRule("FTC402", "error", "use_gpu unlike the device", "targets.ray.use_gpu must agree with resources.device."),
        TargetRule(
            "FTC403", "error", "GPUs for workers that do not use them",
            "A GPU count in worker_resources needs use_gpu: Ray refuses GPUs for CPU workers.",
        ),
        TargetRule(
            "FTC404", "warning", "max_failures without periodic checkpoints",
            "max_failures with evaluation_strategy no: a restarted worker group starts over.",
        ),
        TargetRule(
            "FTC405", "warning", "trainer_resources ignored",
            "resources.trainer_resources is ignored: Ray Train V2 refuses ScalingConfig(trainer_resources).",
        ),
        TargetRule(
            "FTC406", "warning", "relative output_dir",
            "A relative checkpointing.output_dir resolves in the job's working dir, which Ray deletes after the job.",
        ),
        TargetRule(
            "FTC407", "warning", "KubeRay image with a local working_dir",
            "A KubeRay cluster cannot see a local working_dir: give a URI, or put the folder in the image.",
        ),
        TargetRule(
            "FTC408", "warning", "$NAME in env.vars",
            "Ray expands $NAME and ${NAME} in env.vars when it starts the job's processes; the entrypoint sets the "
            "literal value again for the runtime, but what reads the variable earlier sees the expanded one.",
        ),
    )

    def variables(self, plan: Plan) -> dict[str, Any]:
        o = options(plan)
        settings = train_settings(plan)
        return {
            "generated_by": plan.generated_by,
            "job": job_document(plan),
            "manifest": kuberay_manifest(plan),
            "num_workers": settings["num_workers"],
            "use_gpu": settings["use_gpu"],
            "max_failures": o.max_failures,
            "num_to_keep": settings["num_to_keep"],
            "job_env": JOB_ENV,
            "local_working_dir": o.working_dir is not None and not is_uri(o.working_dir),
            "secrets": list(plan.spec.env.secrets),
            "kubernetes_secret": kubernetes_secret(plan),
        }

    def check(self, plan: Plan) -> list[Finding]:
        o = options(plan)
        res = plan.spec.resources
        key = ("targets", "ray")
        found: list[Finding] = []
        for name, value in res.worker_resources.items():
            if name.startswith("accelerator_type:") and not 0 < value <= 1:
                found.append(
                    Finding.error(
                        "FTC401", ("resources", "worker_resources", name),
                        f"is {value}: an accelerator_type resource marks the node type and must be in (0, 1], "
                        "e.g. 0.001 (Anyscale); a node has 1 of it",
                    )
                )
            elif value <= 0:
                found.append(
                    Finding.error("FTC401", ("resources", "worker_resources", name), f"is {value}: Ray resources must be positive")
                )
        gpu = use_gpu(plan)
        if gpu and res.device == "cpu":
            found.append(
                Finding.error(
                    "FTC402", (*key, "use_gpu"),
                    "is true but resources.device is cpu: the workers would hold GPUs and train on CPU; "
                    "set device: gpu (or auto) or use_gpu: false",
                )
            )
        if not gpu and res.device == "gpu":
            found.append(
                Finding.error(
                    "FTC402", (*key, "use_gpu"),
                    "is false but resources.device is gpu: Ray would give the workers no GPU and the runtime would stop; "
                    "remove use_gpu or set device: cpu",
                )
            )
        gpus = res.worker_resources.get("GPU")
        if gpus is not None and gpus > 0 and not gpu:
            found.append(
                Finding.error(
                    "FTC403", ("resources", "worker_resources", "GPU"),
                    "asks for GPUs but the workers do not use them (use_gpu is false): Ray refuses this; "
                    "set resources.device: gpu or remove GPU",
                )
            )
        if o.max_failures != 0 and _no_periodic_checkpoints(plan):
            found.append(
                Finding.warning(
                    "FTC404", (*key, "max_failures"),
                    f"is {o.max_failures} but the run writes no periodic checkpoints (evaluation_strategy is no): "
                    "a restarted worker group starts over; set evaluation_strategy to epoch or steps",
                )
            )
        if res.trainer_resources:
            found.append(
                Finding.warning(
                    "FTC405", ("resources", "trainer_resources"),
                    "is ignored by the ray target: Ray Train V2 (Ray's default Train API) refuses "
                    "ScalingConfig(trainer_resources); its controller reserves no resources",
                )
            )
        if not os.path.isabs(plan.spec.checkpointing.output_dir):
            found.append(
                Finding.warning(
                    "FTC406", ("checkpointing", "output_dir"),
                    f"is relative ({plan.spec.checkpointing.output_dir}): under Ray it resolves inside the job's copy of "
                    "the working dir on the cluster, which Ray deletes after the job; use an absolute path every node "
                    "sees, or --output_dir at submit",
                )
            )
        for name, value in plan.spec.env.vars.items():
            if _RAY_EXPANDS.search(value):
                found.append(
                    Finding.warning(
                        "FTC408", ("env", "vars", name),
                        "holds $NAME or ${NAME}, which Ray expands in runtime_env env_vars when it starts the job's "
                        "processes (an unset ${NAME} becomes empty); ftc's entrypoint sets the literal value again "
                        "before the runtime starts, but what reads the variable earlier sees the expanded one",
                    )
                )
        if o.image and o.working_dir is not None and not is_uri(o.working_dir):
            found.append(
                Finding.warning(
                    "FTC407", (*key, "working_dir"),
                    "is a local folder, which a KubeRay cluster cannot see: kuberay-rayjob.yaml runs the job in the "
                    "image's folder instead; give a URI (s3://..., https://.../project.zip), or put the spec's folder "
                    "in the image and set working_dir: null",
                )
            )
        return found

    def submit(self, build_dir: Path, args: list[str], address: str | None = None) -> int:
        """Submit job.yaml with the Ray job SDK, follow the logs, return 0 when the job SUCCEEDED."""
        return submit_job(Path(build_dir), args, address)


def _no_periodic_checkpoints(plan: Plan) -> bool:
    ck = plan.spec.checkpointing
    return plan.spec.evaluation.evaluation_strategy == "no" and not (ck.checkpoint_every_n_epochs or ck.max_num_checkpoints)


# --------------------------------------------------------------------------- submit


class SubmitError(Exception):
    """A submission problem with a message for the user."""


def dashboard_url(address: str) -> str:
    """http://host:port for `host:port`, `http://host:port/` and the like."""
    text = address.strip().rstrip("/")
    return text if "://" in text else f"http://{text}"


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """The Ray version the dashboard at `url` reports; SubmitError within `timeout` seconds when none answers.

    The job SDK's own requests have no time limit: an address that drops packets, or a port
    that accepts connections but never replies, would hang it.
    """
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


def submit_job(build_dir: Path, args: list[str], address: str | None = None) -> int:
    try:
        return _submit(build_dir, args, address)
    except SubmitError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2


def _submit(build_dir: Path, args: list[str], address: str | None) -> int:
    build_dir = Path(build_dir).resolve()
    job = load_job(build_dir)
    address = address or job.get("address") or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address or address == "auto":
        raise SubmitError(
            "no Ray address: pass --address http://HEAD:8265 (the Ray dashboard), set targets.ray.address, "
            "or set RAY_ADDRESS"
        )
    url = dashboard_url(address)
    kwargs = submission(build_dir, args)
    try:
        from ray.job_submission import JobStatus, JobSubmissionClient
    except ImportError:
        raise SubmitError("submitting to Ray needs the ray package: pip install 'ftc[ray]'") from None
    version = probe(url)
    try:
        client = JobSubmissionClient(url)
        job_id = client.submit_job(**kwargs)
    except Exception as exc:  # the SDK raises RuntimeError, ConnectionError, ValueError... with Ray's message
        raise SubmitError(f"the Ray cluster at {url} refused the job: {exc}") from None
    print(f"ftc: submitted Ray job {job_id} to {url} (Ray {version}); following its logs", file=sys.stderr, flush=True)
    try:
        _follow(client, job_id)
        status = _wait(client, job_id)
    except KeyboardInterrupt:
        print(
            f"\nftc: stopped following; the job goes on. Stop it with: ray job stop --address {url} {job_id}",
            file=sys.stderr,
        )
        return 130
    info = client.get_job_info(job_id)
    if status == JobStatus.SUCCEEDED:
        print(f"ftc: Ray job {job_id} SUCCEEDED", file=sys.stderr, flush=True)
        return 0
    message = f": {info.message}" if getattr(info, "message", None) else ""
    print(f"ftc: Ray job {job_id} {status}{message}", file=sys.stderr, flush=True)
    return 1


def _follow(client: Any, job_id: str) -> None:
    """Print the job's logs as they come, until it ends (or the log stream breaks)."""
    import asyncio

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        print(f"ftc: the log stream of {job_id} broke ({exc}); waiting for the job to end", file=sys.stderr, flush=True)


def _wait(client: Any, job_id: str, poll_s: float = 1.0) -> Any:
    while True:
        status = client.get_job_status(job_id)
        if str(status) in FINAL_STATES or getattr(status, "value", None) in FINAL_STATES:
            return status
        time.sleep(poll_s)


BACKEND = RayBackend
