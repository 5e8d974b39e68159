"""Runs lint over files and reports findings as text, JSON or GitHub workflow annotations."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.errors import Location, SpecError, UnreadableSpec
from ftc.spec.rules import SCHEMA_RULE, UNREADABLE_RULE
from ftc.spec.secrets import mask_secrets


@dataclass
class LintedFinding:
    """A finding with the place it points at."""

    location: Location
    rule: str
    severity: str
    key: str
    message: str


@dataclass
class FileResult:
    file: str
    findings: list[LintedFinding] = field(default_factory=list)


def lint_file(path: Path, overrides: list[str], targets: list[str] | None = None) -> FileResult:
    """Every finding for one spec file: unreadable input, schema errors, or rule and target findings."""
    from ftc.compiler.build import expand_targets, findings_for, load_resolved, plan_for

    result = FileResult(str(path))
    try:
        resolved = load_resolved(path, overrides)
    except UnreadableSpec as exc:
        result.findings.append(_masked(exc.problem.location, UNREADABLE_RULE, "error", exc.problem.key, exc.problem.message))
        return result
    except SpecError as exc:
        for p in exc.problems:
            result.findings.append(_masked(p.location, p.rule or SCHEMA_RULE, "error", p.key, p.message))
        return result
    plans = [plan_for(resolved, t, Path(".")) for t in expand_targets(targets or [], resolved)]
    for f in findings_for(resolved, plans):
        result.findings.append(_masked(resolved.doc.locate(f.path), f.rule, f.severity, f.key, f.message))
    return result


def lint_files(paths: list[Path], overrides: list[str], targets: list[str] | None = None) -> list[FileResult]:
    return [lint_file(p, overrides, targets) for p in paths]


def _masked(location: Location, rule: str, severity: str, key: str, message: str) -> LintedFinding:
    """A finding at `location` (a `--set` location is masked where it is made), anything token-shaped in
    its key or message masked."""
    return LintedFinding(location, rule, severity, mask_secrets(key), mask_secrets(message))


def report_text(results: list[FileResult]) -> str:
    lines = []
    for r in results:
        for f in r.findings:
            key = f"{f.key}: " if f.key else ""
            lines.append(f"{f.location}: {f.rule} {f.severity}: {key}{f.message}")
    errors = sum(f.severity == "error" for r in results for f in r.findings)
    warnings = sum(f.severity == "warning" for r in results for f in r.findings)
    lines.append(f"{len(results)} file(s) checked: {errors} error(s), {warnings} warning(s)")
    return "\n".join(lines) + "\n"


def report_json(results: list[FileResult]) -> str:
    body = [
        {
            "file": f.location.file,
            "line": f.location.line,
            "column": f.location.col,
            "rule": f.rule,
            "severity": f.severity,
            "key": f.key,
            "message": f.message,
        }
        for r in results
        for f in r.findings
    ]
    return json.dumps({"files": [r.file for r in results], "findings": body}, indent=2) + "\n"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def report_github(results: list[FileResult]) -> str:
    """GitHub Actions workflow commands: the findings show on the pull request's lines."""
    lines = []
    for r in results:
        for f in r.findings:
            props = [f"file={_escape_property(f.location.file)}"]
            if f.location.line is not None:
                props += [f"line={f.location.line}", f"col={f.location.col or 1}"]
            props.append(f"title={_escape_property(f.rule)}")
            key = f"{f.key}: " if f.key else ""
            lines.append(f"::{f.severity} {','.join(props)}::{_escape_data(key + f.message)}")
    return "\n".join(lines) + ("\n" if lines else "")


def report_sarif(results: list[FileResult]) -> str:
    """SARIF 2.1.0 for code scanning (GitHub uploads it with codeql-action/upload-sarif)."""
    from ftc import __version__
    from ftc.backends.registry import backends
    from ftc.spec.rules import RULES, Rule

    registry: dict[str, Rule[Any]] = dict(RULES)
    for backend in backends().values():
        registry.update(backend.rules)
    used = sorted({f.rule for r in results for f in r.findings})
    rules = []
    for rule_id in used:
        known = registry.get(rule_id)
        rules.append(
            {
                "id": rule_id,
                "name": known.title if known else rule_id,
                "shortDescription": {"text": known.title if known else rule_id},
                "fullDescription": {"text": known.doc if known else rule_id},
                # a rule of both severities ("error/warning") defaults to error; each result has its own level
                "defaultConfiguration": {"level": known.severities[0] if known else "error"},
            }
        )
    findings = [f for r in results for f in r.findings]
    body = {
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [
            {
                "tool": {"driver": {"name": "ftc", "version": __version__, "rules": rules}},
                "results": [
                    {
                        "ruleId": f.rule,
                        "ruleIndex": used.index(f.rule),
                        "level": f.severity,
                        "message": {"text": (f"{f.key}: " if f.key else "") + f.message},
                        "locations": [
                            {
                                "physicalLocation": {
                                    "artifactLocation": {"uri": f.location.file},
                                    "region": {"startLine": f.location.line or 1, "startColumn": f.location.col or 1},
                                }
                            }
                        ],
                    }
                    for f in findings
                ],
            }
        ],
    }
    return json.dumps(body, indent=2) + "\n"


REPORTERS: dict[str, Callable[[list[FileResult]], str]] = {
    "text": report_text,
    "json": report_json,
    "github": report_github,
    "sarif": report_sarif,
}
