"""The compiler's stages: load -> validate -> resolve -> plan -> check -> render -> write."""

from __future__ import annotations

import os
from pathlib import Path

from ftc import __version__
from ftc.backends.registry import backends, get_backend
from ftc.compiler.plan import build_plan
from ftc.compiler.resolve import CONFIG_NAME, Resolved, resolve
from ftc.compiler.write import Artifact, manifest, write_builds
from ftc.errors import CompileError, Problem, SpecError
from ftc.spec.loader import SourceDoc, load_spec_file
from ftc.spec.overrides import apply_overrides
from ftc.spec.rules import Finding, run_rules
from ftc.spec.validate import validate_spec


def load_resolved(spec_path: str | Path, overrides: list[str] | None = None) -> Resolved:
    """Read, override, validate and resolve a spec file."""
    doc = load_spec_file(spec_path)
    return resolve_doc(doc, overrides or [])


def resolve_doc(doc: SourceDoc, overrides: list[str]) -> Resolved:
    apply_overrides(doc, overrides)
    return resolve(validate_spec(doc), doc)


def expand_targets(targets: list[str]) -> list[str]:
    """`all` means every registered target; unknown names are errors."""
    if "all" in targets:
        return list(backends())
    for name in targets:
        try:
            get_backend(name)
        except KeyError as exc:
            raise CompileError(str(exc.args[0])) from None
    return list(dict.fromkeys(targets))


def build_artifacts(resolved: Resolved, target: str, out_dir: Path) -> tuple[list[Artifact], list[Finding]]:
    """The files of one target and the target's own findings."""
    from ftc.compiler.render import render_target, to_json  # jinja only when rendering, not for lint

    backend = get_backend(target)
    target_dir = out_dir / target
    base_dir = os.path.relpath(resolved.doc.base_dir, target_dir.resolve())
    plan = build_plan(resolved, target, base_dir)
    findings = backend.check(plan)
    artifacts = render_target(backend, backend.variables(plan))
    artifacts.append(Artifact(CONFIG_NAME, (to_json(plan.config) + "\n").encode()))
    header = {
        "generated_by": f"ftc {__version__}",
        "spec": plan.config["ftc"]["spec"],
        "spec_sha256": resolved.doc.sha256,
        "target": target,
    }
    artifacts.append(manifest(artifacts, header))
    return artifacts, findings


def compile_spec(
    spec_path: str | Path, targets: list[str], out_dir: str | Path, overrides: list[str] | None = None
) -> list[Path]:
    """Compile a spec for `targets` into `out_dir/<target>/`; nothing is written unless all succeed."""
    resolved = load_resolved(spec_path, overrides)
    out = Path(out_dir)
    findings = run_rules(resolved)
    builds = {}
    for target in expand_targets(targets):
        artifacts, target_findings = build_artifacts(resolved, target, out)
        findings += target_findings
        builds[target] = artifacts
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise SpecError(
            [Problem(resolved.doc.locate(f.path), f.key, f"{f.message} [{f.rule}]") for f in errors]
        )
    return write_builds(out, builds)
