"""Where each rank runs: its global and local rank, its node and its host, gathered to rank 0.

`node` is the scheduler's name for the machine: SLURMD_NODENAME under SLURM, the Ray node id under
Ray Train (the ray target's workers have FTC_RAY_JOB in their environment; ray is imported only
then), else the host name. Rank 0 logs one line per rank before training ("rank R of W on node N
...") and writes the list to metrics.json as "ranks", so a multi-node run shows which ranks ran where.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from ftc.contract import RAY_JOB_ENV

log = logging.getLogger("ftc.runtime")


def ray_node_id() -> str | None:
    """The id of the Ray node this process runs on; None outside a started Ray worker."""
    import ray

    if not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_node_id())


def node_name(hostname: str, environ: Mapping[str, str] | None = None) -> str:
    """SLURMD_NODENAME, else the Ray node id (under the ray target), else `hostname`."""
    env = os.environ if environ is None else environ
    if env.get("SLURMD_NODENAME"):
        return env["SLURMD_NODENAME"]
    if RAY_JOB_ENV in env:
        return ray_node_id() or hostname
    return hostname


def this_rank(rank: int, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """{"rank", "local_rank", "node", "hostname"} of this process (global rank `rank`)."""
    env = os.environ if environ is None else environ
    hostname = socket.gethostname()
    return {"rank": rank, "local_rank": int(env.get("LOCAL_RANK", "0")), "node": node_name(hostname, env), "hostname": hostname}


def gather_ranks(rank: int) -> list[dict[str, Any]]:
    """Every rank's `this_rank`, in rank order (an all-gather when a process group runs; else this one)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [this_rank(rank)]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, this_rank(dist.get_rank()))
    return sorted(gathered, key=lambda entry: entry["rank"])


def log_ranks(ranks: list[dict[str, Any]]) -> None:
    """One line per rank: `rank R of W on node N (host H, local rank L)`."""
    for entry in ranks:
        log.info(
            "rank %d of %d on node %s (host %s, local rank %d)",
            entry["rank"], len(ranks), entry["node"], entry["hostname"], entry["local_rank"],
        )
