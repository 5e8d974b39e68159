"""What a target is: an options model, pure template variables, its own checks, and a submit step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ftc.spec.fields import Section

if TYPE_CHECKING:
    from ftc.compiler.plan import Plan
    from ftc.spec.rules import Finding


@dataclass(frozen=True)
class TargetRule:
    """A rule a target's `check` applies: stable id, severity, title and what it checks (`ftc docs --rules`).

    The severity is "error/warning" for a rule whose findings are errors or warnings depending on the case.
    """

    id: str
    severity: Literal["error", "warning", "error/warning"]
    title: str
    doc: str


class Backend(ABC):
    """A compile target. Its templates are every `*.j2` file in `template_dir` (default `ftc/templates/<name>/`).

    Subclasses set `name`, `Options` (the `targets.<name>` section of the spec) and `summary`,
    and implement `variables`; `check` adds target-specific lint findings, each under a rule declared
    in `rules`, and `submit` runs or hands over a compiled build (compiling itself never submits).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type[Section]]
    template_dir: ClassVar[str | None] = None
    rules: ClassVar[tuple[TargetRule, ...]] = ()
    # Jobs run on a cluster, where resources.device auto means one GPU per process (the Job's device).
    runs_on_cluster: ClassVar[bool] = True

    @abstractmethod
    def variables(self, plan: Plan) -> dict[str, Any]:
        """The template variables for this plan; pure, no I/O."""

    def check(self, plan: Plan) -> list[Finding]:
        """Target-specific findings (errors stop the compile)."""
        return []

    def task_docs(self, task: str) -> str | None:
        """What this target makes of a `task` spec, documented (`ftc docs --task T --format <name>`); None: nothing."""
        return None

    def submit(self, build_dir: Path, args: list[str], address: str | None = None) -> int:
        """Run or hand over the build in `build_dir`; returns a process exit code.

        `args` go to the runtime (`--<parameter> VALUE`); `address` names the scheduler or cluster
        to submit to, for targets that have one (a Ray dashboard URL, say).
        """
        raise NotImplementedError(f"target {self.name} has no submit step yet")
