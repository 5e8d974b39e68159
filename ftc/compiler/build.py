"""The compiler's stages: load -> validate -> resolve -> plan -> check -> render -> write."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ftc import __version__
from ftc.backends.plan import Plan, job_for
from ftc.backends.registry import backends, get_backend
from ftc.compiler.resolve import resolve
from ftc.compiler.write import Artifact, manifest, write_builds
from ftc.contract import CONFIG_NAME
from ftc.errors import CompileError, Problem, SpecError
from ftc.spec.loader import SourceDoc, load_spec_file, parse_spec_text
from ftc.spec.overrides import apply_overrides
from ftc.spec.resolved import Resolved
from ftc.spec.rules import TARGET_RULE, Finding, run_rules
from ftc.spec.secrets import mask_secrets
from ftc.spec.validate import validate_spec


def load_resolved(spec_path: str | Path, overrides: list[str] | None = None) -> Resolved:
    """Read, override, validate and resolve a spec file."""
    doc = load_spec_file(spec_path)
    return resolve_doc(doc, overrides or [])


def resolve_doc(doc: SourceDoc, overrides: list[str]) -> Resolved:
    apply_overrides(doc, overrides)
    return resolve(validate_spec(doc), doc)


def expand_targets(targets: list[str], resolved: Resolved) -> list[str]:
    """`all` means the spec's targets.enabled (every registered target when unset); unknown names are errors."""
    if "all" in targets:
        return list(resolved.spec.targets.enabled or backends())  # type: ignore[attr-defined]
    for name in targets:
        try:
            get_backend(name)
        except KeyError as exc:
            raise CompileError(str(exc.args[0])) from None
    return list(dict.fromkeys(targets))


def build_plan(resolved: Resolved, target: str, base_dir: str) -> Plan:
    """The plan for one target; `base_dir` is the spec folder relative to the target's output folder."""
    backend = get_backend(target)
    options = getattr(resolved.spec.targets, target)  # type: ignore[attr-defined]
    job = job_for(resolved.spec, options, backend.runs_on_cluster)
    config = resolved.runtime_config(base_dir)
    config["resources"]["device"] = job.device  # what the job asked for: the runtime refuses a node without it
    return Plan(resolved=resolved, target=target, options=options, config=config, job=job)


def plan_for(resolved: Resolved, target: str, out_dir: Path) -> Plan:
    """The plan of one target whose files go to `out_dir/<target>/`."""
    base_dir = os.path.relpath(resolved.doc.base_dir, (out_dir / target).resolve())
    return build_plan(resolved, target, base_dir)


def task_defaults_plan(task: str, target: str) -> Plan:
    """The plan of a spec that sets only the task, a model and a data folder: every other value is a default."""
    text = f"task: {task}\nmodel: model\ndata:\n  preprocess_output: data\n"
    resolved = resolve_doc(parse_spec_text(text.encode(), f"<{task} defaults>"), [])
    return build_plan(resolved, target, ".")


def task_docs(task: str, target: str) -> str | None:
    """What `target` documents of a spec that sets only `task` (its defaults); None when it documents nothing."""
    return get_backend(target).task_docs(task_defaults_plan(task, target))


def findings_for(resolved: Resolved, plans: list[Plan]) -> list[Finding]:
    """The spec's rule findings plus each target's own, less those the spec's lint.ignore silences."""
    findings = run_rules(resolved)
    enabled = resolved.spec.targets.enabled  # type: ignore[attr-defined]
    for plan in plans:
        if enabled is not None and plan.target not in enabled:
            findings.append(
                Finding.error(
                    TARGET_RULE, ("targets", "enabled"),
                    f"is [{', '.join(enabled)}]: this spec is not for {plan.target}; add {plan.target} there, "
                    "or use one of those targets",
                )
            )
            continue
        findings += get_backend(plan.target).check(plan)
    ignored = resolved.spec.lint.ignore
    return [f for f in findings if f.rule not in ignored]


def render_plan(plan: Plan) -> list[Artifact]:
    """The files of one target: its rendered templates, the runtime's config and the manifest."""
    from ftc.compiler.render import render_target, to_json  # jinja only when rendering, not for lint

    backend = get_backend(plan.target)
    own, shared = backend.variables(plan), plan.shared_variables()
    if clash := sorted(own.keys() & shared.keys()):
        raise TypeError(f"{type(backend).__name__}.variables redefines the shared template variables {clash}")
    artifacts = render_target(backend, {**shared, **own})
    artifacts.append(Artifact(CONFIG_NAME, (to_json(plan.config) + "\n").encode()))
    header = {
        "generated_by": f"ftc {__version__}",
        "spec": plan.config["ftc"]["spec"],
        "spec_sha256": plan.resolved.doc.sha256,
        "target": plan.target,
    }
    artifacts.append(manifest(artifacts, header))
    return artifacts


def as_problem(resolved: Resolved, finding: Finding) -> Problem:
    """The finding as a problem to report, with anything token-shaped in its key or message masked."""
    message = f"{finding.message} [{finding.rule}]"
    return Problem(resolved.doc.locate(finding.path), mask_secrets(finding.key), mask_secrets(message))


def compile_spec(
    spec_path: str | Path,
    targets: list[str],
    out_dir: str | Path,
    overrides: list[str] | None = None,
    on_warning: Callable[[Problem], None] | None = None,
) -> list[Path]:
    """Compile a spec for `targets` into `out_dir/<target>/`; nothing is written unless all succeed.

    Error findings (rules and target checks) stop the compile; warnings go to `on_warning`, and so
    do the writer's (what it kept in a target folder: see ftc.compiler.write).
    """
    resolved = load_resolved(spec_path, overrides)
    out = Path(out_dir)
    plans = [plan_for(resolved, target, out) for target in expand_targets(targets, resolved)]
    findings = findings_for(resolved, plans)
    errors = [as_problem(resolved, f) for f in findings if f.severity == "error"]
    if errors:
        raise SpecError(errors)
    if on_warning is not None:
        for f in findings:
            on_warning(as_problem(resolved, f))
    return write_builds(out, {plan.target: render_plan(plan) for plan in plans}, on_warning)
