"""The local target: a bash script that runs the runtime on this machine, with torchrun for many processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from ftc.backends.base import Backend, Say, Submitted, quiet
from ftc.backends.plan import Plan
from ftc.spec.fields import Section, param
from ftc.spec.rules.registry import KeyPath, RuleSet


class LocalOptions(Section):
    """Settings of the local target (run.sh)."""

    python: str = param(
        "python3",
        "Python interpreter with ftc[train] installed; the FTC_PYTHON environment variable overrides it.",
        min_length=1,
    )


RULES: RuleSet[Plan] = RuleSet()


class LocalBackend(Backend):
    name = "local"
    summary = "run.sh: the runtime on this machine (python, or torchrun --standalone for several processes)"
    Options = LocalOptions
    runs_on_cluster = False  # device auto is decided at run time, on this machine
    rules = RULES
    main_artifact = "run.sh"

    def variables(self, plan: Plan) -> dict[str, Any]:
        options: LocalOptions = plan.options  # type: ignore[assignment]
        nproc = plan.spec.resources.processes_per_node
        launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", str(nproc)]
        return {
            "python": options.python,
            "launcher": launcher,
            "nproc": nproc,
            "config": plan.config,
        }

    def submit(
        self, build_dir: Path, args: list[str], address: str | None = None, *, on_output: Say = quiet, on_status: Say = quiet
    ) -> Submitted:
        """Run run.sh here, with this interpreter unless FTC_PYTHON names another; its exit code is the result's.

        The run writes to this process's stdout and stderr itself (a terminal stays a terminal), so
        `on_output` gets nothing. It has its own process group, and SIGTERM, SIGINT and SIGHUP sent to
        this process are passed on to it; see `Child.run`.
        """
        env = {**os.environ, "FTC_PYTHON": os.environ.get("FTC_PYTHON", sys.executable)}
        return Submitted(self.name, exit_code=Child().run(["bash", str(build_dir / "run.sh"), *args], env))


@RULES.rule("FTC201", "error", "several nodes")
def _several_nodes(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """The local target runs on this machine only: resources.nodes must be 1."""
    if plan.spec.resources.nodes > 1:
        yield (
            ("resources", "nodes"),
            f"the local target runs on one node, not {plan.spec.resources.nodes}; use slurm or ray, and say which "
            "targets this spec is for with `targets: [slurm, ray]` (then `-t all` means those)",
        )


FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_GRACE_S = 120.0  # how long a signalled run may take to checkpoint and exit before its group is killed
POLL_S = 0.5


class Child:
    """A command run in its own session, which gets the signals this process gets instead of dying with it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.signals: list[int] = []
        self.deadline: float | None = None

    def run(self, command: list[str], env: dict[str, str]) -> int:
        """Run `command` to its end; its exit code, or 128 + the first signal that stopped it.

        A forwarded signal gives the command STOP_GRACE_S to exit (the runtime checkpoints on the way
        when preemption is on); then its process group is killed. Whatever is left of the group when
        the command ends after a signal is killed too.
        """
        with self._forwarding():
            self.proc = subprocess.Popen(command, env=env, start_new_session=True)
            for signum in self.signals:  # came before the command started
                self._send(signum)
            code = self._wait(self.proc)
        if not self.signals:
            return code if code >= 0 else 128 - code
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return 128 + self.signals[0]

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        if self.deadline is None:
            self.deadline = time.monotonic() + STOP_GRACE_S
        self._send(signum)

    def _send(self, signum: int) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def _wait(self, proc: subprocess.Popen[bytes]) -> int:
        while True:
            try:
                return proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                if self.deadline is not None and time.monotonic() > self.deadline:
                    self._send(signal.SIGKILL)

    @contextlib.contextmanager
    def _forwarding(self) -> Iterator[None]:
        previous = {signum: signal.signal(signum, self._forward) for signum in FORWARDED_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


BACKEND = LocalBackend
