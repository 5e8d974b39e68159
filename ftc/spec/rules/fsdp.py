"""Rules on FSDP: settings without it, prerequisites, and what the runtime can run (hybrid sharding)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from ftc.spec.rules.facts import given, settings_without_switch
from ftc.spec.rules.registry import KeyPath, rule

if TYPE_CHECKING:
    from ftc.spec.resolved import Resolved


@rule("FTC117", "error", "setting without the option it belongs to")
def _prerequisites(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Options that need another: from_peft_checkpoint needs apply_lora, hsdp needs HYBRID_SHARD, anyprecision needs pure_bf16."""
    s = r.spec
    if s.lora.from_peft_checkpoint and not s.lora.apply_lora:
        yield ("lora", "from_peft_checkpoint"), "needs apply_lora: true"
    if s.fsdp.hsdp and s.fsdp.sharding_strategy != "HYBRID_SHARD":
        yield ("fsdp", "hsdp"), "needs sharding_strategy: HYBRID_SHARD"
    if s.fsdp.fsdp_optimizer == "anyprecision" and not s.precision.pure_bf16:
        yield ("fsdp", "fsdp_optimizer"), "anyprecision needs precision.pure_bf16: true"


@rule("FTC118", "warning", "FSDP settings without FSDP")
def _fsdp_settings_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """FSDP settings (sharding, checkpoint_type, low_cpu_fsdp, ...) have no effect unless enable_fsdp is true."""
    for name in settings_without_switch(r, "fsdp", "enable_fsdp"):
        yield ("fsdp", name), "has no effect because fsdp.enable_fsdp is false"


@rule("FTC142", "warning", "hsdp group sizes without hsdp")
def _group_sizes_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """sharding_group_size and replica_group_size apply only to hybrid sharding (fsdp.hsdp: true)."""
    f = r.spec.fsdp
    if not f.enable_fsdp or f.hsdp:
        return  # without FSDP, FTC118 reports them
    for name in ("sharding_group_size", "replica_group_size"):
        if given(r, f"fsdp.{name}"):
            yield ("fsdp", name), "has no effect because fsdp.hsdp is false; set hsdp: true or remove it"


@rule("FTC145", "error", "FSDP combination the runtime cannot run")
def _fsdp_limits(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """With FSDP the adapter is sharded, so LoRA must save it unmerged (merge_lora_weights: false); on CPU
    (resources.device cpu) only FSDP2 runs (FULL_SHARD, SHARD_GRAD_OP) with sharded checkpoints: NO_SHARD and
    HYBRID_SHARD are FSDP1, which accelerate runs on GPUs only, and FULL_STATE_DICT checkpoints fail in CPU processes."""
    s = r.spec
    if not s.fsdp.enable_fsdp:
        return
    if (s.lora.apply_lora or s.lora.from_peft_checkpoint) and s.lora.merge_lora_weights and s.checkpointing.save_model:
        yield ("lora", "merge_lora_weights"), "cannot be true with fsdp.enable_fsdp (the adapter is sharded); set it to false"
    if s.resources.device == "cpu":
        if s.fsdp.sharding_strategy in ("NO_SHARD", "HYBRID_SHARD"):
            yield ("fsdp", "sharding_strategy"), (
                f"{s.fsdp.sharding_strategy} is FSDP1, which runs on GPUs only; on CPU use FULL_SHARD or SHARD_GRAD_OP"
            )
        if s.fsdp.checkpoint_type == "FULL_STATE_DICT":
            yield ("fsdp", "checkpoint_type"), "FULL_STATE_DICT fails in CPU processes; use SHARDED_STATE_DICT on CPU"


def hsdp_problem(sharding: int, replica: int, nodes: int, per_node: int) -> str | None:
    """Why these hybrid-sharding group sizes cannot run (None when they can); lint rule FTC146 and the runtime.

    HYBRID_SHARD shards within each node and replicates across nodes (torch's own groups); a
    custom device mesh of other sizes is not built, so other sizes are refused, not dropped."""
    world = nodes * per_node
    sharding, replica = sharding or per_node, replica or nodes
    if sharding * replica != world:
        return (
            f"sharding_group_size {sharding} x replica_group_size {replica} = {sharding * replica}, "
            f"but the job has {world} processes ({nodes} node(s) x {per_node})"
        )
    if (sharding, replica) != (per_node, nodes):
        return (
            f"sharding_group_size {sharding} x replica_group_size {replica} is not supported: hybrid sharding "
            f"shards within each node and replicates across nodes; use {per_node} x {nodes} (or 0 for both)"
        )
    return None


@rule("FTC146", "error", "hybrid-sharding groups the runtime cannot build")
def _hsdp_groups(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """With fsdp.hsdp, sharding_group_size x replica_group_size must equal the world size (nodes x
    processes_per_node), and the groups must be the nodes: HYBRID_SHARD shards within each node and replicates
    across nodes. Other group sizes are refused (here and by the runtime), never silently dropped."""
    f, res = r.spec.fsdp, r.spec.resources
    if f.enable_fsdp and f.hsdp:
        problem = hsdp_problem(f.sharding_group_size, f.replica_group_size, res.nodes, res.processes_per_node)
        if problem:
            yield ("fsdp", "sharding_group_size"), problem
