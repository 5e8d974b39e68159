"""The local target: a bash script that runs the runtime on this machine, with torchrun for many processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ftc.backends.base import Backend, TargetRule
from ftc.compiler.plan import Plan
from ftc.spec.fields import Section, param
from ftc.spec.rules import Finding


class LocalOptions(Section):
    """Settings of the local target (run.sh)."""

    python: str = param(
        "python3",
        "Python interpreter with ftc[train] installed; the FTC_PYTHON environment variable overrides it.",
        min_length=1,
    )


class LocalBackend(Backend):
    name = "local"
    summary = "run.sh: the runtime on this machine (python, or torchrun --standalone for several processes)"
    Options = LocalOptions
    rules = (TargetRule("FTC201", "error", "several nodes", "The local target runs on this machine only: resources.nodes must be 1."),)

    def variables(self, plan: Plan) -> dict[str, Any]:
        options: LocalOptions = plan.options  # type: ignore[assignment]
        nproc = plan.spec.resources.processes_per_node
        launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc)]
        return {
            "generated_by": plan.generated_by,
            "name": plan.name,
            "python": options.python,
            "launcher": launcher,
            "runtime_args": plan.runtime_args()[:-1],
            "config_name": plan.runtime_args()[-1],
            "nproc": nproc,
            "env_vars": sorted(plan.spec.env.vars.items()),
            "secrets": plan.spec.env.secrets,
            "config": plan.config,
        }

    def check(self, plan: Plan) -> list[Finding]:
        if plan.spec.resources.nodes > 1:
            return [
                Finding.error(
                    "FTC201",
                    ("resources", "nodes"),
                    f"the local target runs on one node, not {plan.spec.resources.nodes}; use slurm or ray",
                )
            ]
        return []

    def submit(self, build_dir: Path, args: list[str], address: str | None = None) -> int:
        """Run run.sh here, with this interpreter unless FTC_PYTHON names another."""
        env = {**os.environ, "FTC_PYTHON": os.environ.get("FTC_PYTHON", sys.executable)}
        return subprocess.call(["bash", str(build_dir / "run.sh"), *args], env=env)


BACKEND = LocalBackend
