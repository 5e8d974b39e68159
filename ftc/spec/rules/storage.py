"""FTC160-FTC162, FTC165: remote locations (s3://, gs://, abfs://, az://, hf://) for data, models and outputs.

Lint runs where the spec is written, the job often elsewhere: a scheme ftc does not know is an error, a
filesystem package missing here only a warning (the runtime refuses the location where it is missing too).
Credentials come from the environment of the job, named in env.secrets, never from the spec.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ftc.spec.rules.paths import location_values
from ftc.spec.rules.registry import KeyPath, rule
from ftc.spec.uris import SCHEMES, Scheme, missing_package, scheme_of, unknown_scheme_message

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
