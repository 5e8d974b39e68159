"""FTC160-FTC162, FTC165: remote locations (s3://, gs://, abfs://, az://, hf://) for data, models and outputs;
FTC166: checkpoints of a multi-node job on storage only one node sees.

Lint runs where the spec is written, the job often elsewhere: a scheme ftc does not know is an error, a
filesystem package missing here only a warning (the runtime refuses the location where it is missing too).
Credentials come from the environment of the job, named in env.secrets, never from the spec.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ftc.spec.rules.paths import is_relative_path, location_values
from ftc.spec.rules.registry import KeyPath, rule
from ftc.spec.uris import SCHEMES, Scheme, is_uri, missing_package, scheme_of, unknown_scheme_message

if TYPE_CHECKING:
    from ftc.spec.resolved import Resolved


@rule("FTC160", "error", "location with an unknown scheme")
def _unknown_scheme(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """A data, model, output or DeepSpeed location with a scheme must use one ftc reads (s3, gs, gcs, abfs, abfss,
    az, hf, azureml); anything else would be taken for a local path and fail on the cluster."""
    for key, value in location_values(r):
        if problem := unknown_scheme_message(value):
            yield key, problem


@rule("FTC161", "warning", "filesystem package not installed here")
def _package_missing(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The fsspec package of a location's scheme (s3fs, gcsfs, adlfs, huggingface_hub) is not installed where lint
    runs; the job's environment needs it (its ftc extra), or the runtime stops with an error there."""
    for key, value in location_values(r):
        if scheme := missing_package(value):
            yield key, (
                f"{value!r} needs the {scheme.package} package to read {scheme.name}:// locations, and it is not "
                f"installed here; install it where the job runs: pip install 'ftc[{scheme.extra}]'"
            )


@rule("FTC162", "warning", "remote location without its credentials in env.secrets")
def _credentials_not_named(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """A remote location whose scheme's credential variables are none of them named in env.secrets: the job's
    environment would have no credentials for it (found once per scheme, at its first key). Silence it with
    lint.ignore when the nodes need none (a public bucket, an instance role, a mounted credentials file)."""
    secrets, seen = set(r.spec.env.secrets), set()
    for key, value in location_values(r):
        scheme = SCHEMES.get(scheme_of(value) or "")
        if scheme is None or scheme.name in seen:
            continue
        seen.add(scheme.name)
        if not secrets & set(credential_names(scheme)):
            yield key, (
                f"reads {scheme.name}:// but env.secrets names none of its variables ({scheme.credentials}): add "
                "those your storage needs to env.secrets (set in the environment where the job runs; never write "
                "their values in the spec), or silence FTC162 with lint.ignore if the nodes need none"
            )


def credential_names(scheme: Scheme) -> list[str]:
    """The environment variables a scheme's filesystem package reads its credentials and endpoint from."""
    return [name.strip() for name in scheme.credentials.split(",")]


@rule("FTC165", "error", "sharded checkpoints uploaded from one node")
def _sharded_remote_checkpoints(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """A remote output_dir is uploaded by the first process, from its node's staging folder: with DeepSpeed or
    FSDP over several nodes, each node holds only its own shards, so the uploaded checkpoints would be partial."""
    spec = r.spec
    sharded = spec.deepspeed.apply_deepspeed or spec.fsdp.enable_fsdp
    if sharded and spec.resources.nodes > 1 and scheme_of(spec.checkpointing.output_dir) in SCHEMES:
        yield ("checkpointing", "output_dir"), (
            f"{spec.checkpointing.output_dir!r} is uploaded from the first node only, but DeepSpeed / FSDP on "
            f"{spec.resources.nodes} nodes shard the checkpoints over the nodes: use a folder every node sees "
            "(a shared file system), or one node"
        )


# Folders each node has its own of: temporary folders, shared memory, Anyscale's node-local disk.
NODE_LOCAL_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm", "/mnt/local_storage")


def node_local_folder(value: str, ray_job: bool) -> str | None:
    """Why `value` is on each node's own disk (the node-local folder it is under, or "relative" for a Ray job,
    whose relative paths resolve in each node's copy of the working dir); None for a URI or another path."""
    if is_uri(value):
        return None
    if ray_job and is_relative_path(value):
        return "relative"
    path = posixpath.normpath(value)
    return next((folder for folder in NODE_LOCAL_FOLDERS if path == folder or path.startswith(f"{folder}/")), None)


def is_ray_job(r: Resolved) -> bool:
    """The spec is meant for the ray target: targets.enabled names it, or the spec has a targets.ray section."""
    enabled = getattr(getattr(r.spec, "targets", None), "enabled", None) or []
    targets = r.doc.data.get("targets") if isinstance(r.doc.data, dict) else None
    return "ray" in enabled or (isinstance(targets, dict) and "ray" in targets)


def _checkpoint_folders(r: Resolved) -> Iterator[tuple[KeyPath, str, bool]]:
    """(key, value, whether it is read under Ray) of the folders a multi-node job resumes from: output_dir, or
    under Ray the target's storage_path when the spec sets one (Ray Train restores its checkpoints from there)."""
    ray_job = is_ray_job(r)
    storage = getattr(getattr(getattr(r.spec, "targets", None), "ray", None), "storage_path", None)
    if storage:
        yield ("targets", "ray", "storage_path"), str(storage), True
    if not (ray_job and storage):
        yield ("checkpointing", "output_dir"), r.spec.checkpointing.output_dir, ray_job


@rule("FTC166", "warning", "multi-node checkpoints on node-local storage")
def _node_local_checkpoints(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """A job on several nodes (resources.nodes > 1) whose checkpoint folder (checkpointing.output_dir, or the ray
    target's storage_path) is on each node's own disk: /tmp, /var/tmp, /dev/shm, /mnt/local_storage (Anyscale's
    node-local disk), or a relative path under Ray. Each node keeps its own checkpoints, and a resume on other nodes
    (a requeued SLURM job, a restarted Ray worker group) finds none. A remote URI (s3://...) or a shared file system
    is what every node sees."""
    nodes = r.spec.resources.nodes
    if nodes <= 1:
        return
    for key, value, ray_job in _checkpoint_folders(r):
        where = node_local_folder(value, ray_job)
        if where is None:
            continue
        local = "each node's copy of the Ray job's working dir" if where == "relative" else f"{where}, each node's own disk"
        yield key, (
            f"{value!r} is in {local}: with resources.nodes {nodes} every node keeps its own checkpoints there, and a "
            "resume on other nodes (a requeued job, a restarted Ray worker group) finds none; use a folder every node "
            "sees (a shared file system) or a remote URI (s3://...)"
        )
