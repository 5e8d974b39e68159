"""What a target is: an options model, pure template variables, its own checks, and a submit step."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ftc.errors import SubmitError
from ftc.spec.fields import Section
from ftc.spec.rules.paths import is_azureml_asset, location_values
from ftc.spec.rules.registry import Finding, KeyPath, RuleSet

if TYPE_CHECKING:
    from ftc.backends.plan import Plan


# Where a submit sends text as it comes: a job's output (stdout), or a line on its progress (the CLI adds `ftc: `).
Say = Callable[[str], None]


def quiet(text: str) -> None:
    """The default of `on_output` and `on_status`: the text goes nowhere."""


@dataclass(frozen=True)
class Submitted:
    """What `Backend.submit` did with a build, for the CLI to report (backends never print).

    `job_id` is the scheduler's id of the job (None: it ran here, its output its own report), `job_kind`
    what the job is called in messages, `where` the cluster, dashboard or workspace it went to, `url` a
    page that shows it. `state` and `message` say how it ended when submit followed it to its end (None:
    handed over). `exit_code` is what `ftc submit` exits with. With `parsable`, the job id is all that
    goes to stdout (sbatch --parsable's convention, for `JOB=$(ftc submit ...)`).
    """

    target: str
    exit_code: int = 0
    job_id: str | None = None
    job_kind: str = "job"
    where: str | None = None
    url: str | None = None
    state: str | None = None
    message: str | None = None
    parsable: bool = False


class Backend(ABC):
    """A compile target. Its templates are every `*.j2` file in `template_dir` (default `ftc/templates/<name>/`).

    Subclasses set `name`, `Options` (the `targets.<name>` section of the spec) and `summary`,
    and implement `variables`; `rules` holds the target's lint rules (a `RuleSet` over the plan, which
    `check` runs), and `submit` runs or hands over a compiled build (compiling itself never submits).
    Options that are paths relative to the spec's folder are named in `Options.path_options`
    (FTC120 checks them); `main_artifact` and `gpu_artifact` name the files `ftc docs --target` shows.
    A target whose jobs cannot read Azure ML assets (`reads_azureml_assets` false, the default) gets the
    shared rule FTC163 in its `rules`, which refuses `azureml:` locations.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type[Section]]
    template_dir: ClassVar[str | None] = None
    rules: ClassVar[RuleSet[Plan]] = RuleSet()
    # The file shown in full in the docs' worked example (None: the first file), and in the GPU example (None: the same).
    main_artifact: ClassVar[str | None] = None
    gpu_artifact: ClassVar[str | None] = None
    # Jobs run on a cluster, where resources.device auto means one GPU per process (the Job's device).
    runs_on_cluster: ClassVar[bool] = True
    # Its jobs read azureml:// data and models (Azure ML mounts them as inputs); other targets refuse them (FTC163).
    reads_azureml_assets: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give a target that cannot read Azure ML assets the shared rule that refuses them, in its own `rules`."""
        super().__init_subclass__(**kwargs)
        if "rules" not in cls.__dict__:
            cls.rules = RuleSet()  # never register into the set a parent class shares
        if not cls.reads_azureml_assets and AZUREML_RULE not in cls.rules:
            cls.rules.rule(AZUREML_RULE, "error", "Azure ML location")(azureml_assets)

    @abstractmethod
    def variables(self, plan: Plan) -> dict[str, Any]:
        """The template variables for this plan; pure, no I/O."""

    def check(self, plan: Plan) -> list[Finding]:
        """The findings of this target's `rules` on the plan, less those the spec's lint.ignore silences."""
        return self.rules.run(plan, plan.spec.lint.ignore)

    def task_docs(self, plan: Plan) -> str | None:
        """What this target makes of the plan of a task's defaults, documented (`ftc docs --task T --format <name>`);
        None: nothing."""
        return None

    def submit(
        self, build_dir: Path, args: list[str], address: str | None = None, *, on_output: Say = quiet, on_status: Say = quiet
    ) -> Submitted:
        """Run or hand over the build in `build_dir`: what became of it, or SubmitError.

        `args` go to the runtime (`--<parameter> VALUE`); `address` names the scheduler or cluster
        to submit to, for targets that have one (a Ray dashboard URL, say). Text that must be shown as
        it comes goes to `on_output` (a followed job's logs) and `on_status` (progress lines).
        """
        raise SubmitError(f"target {self.name} has no submit step yet")


AZUREML_RULE = "FTC163"


def azureml_assets(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """`azureml://` and `azureml:<name>:<version>` locations are Azure ML data and registry assets, which only an
    Azure ML job can read (the azureml target passes them as inputs Azure ML mounts); every other target refuses them."""
    for key, value in location_values(plan.resolved):
        if is_azureml_asset(value):
            yield key, (
                f"{value!r} is an Azure ML asset, which only an Azure ML job can read (Azure ML mounts it); the "
                f"{plan.target} target cannot pass it to its job: give a path its nodes see, or the storage URI "
                "behind the asset (abfs://, s3://, gs://), or compile with --target azureml"
            )
