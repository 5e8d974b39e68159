"""`ftc import`'s check: the imported spec text must load, validate and pass the lint rules before it is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ftc.compiler.build import as_problem, expand_targets, findings_for, plan_for, resolve_doc
from ftc.errors import SpecError
from ftc.importers import Imported
from ftc.importers.writer import spec_text
from ftc.spec.loader import parse_spec_text


def checked_spec_text(imported: Imported, output: Path | None, on_warning: Callable[[object], None]) -> str:
    """The spec text of `imported`, checked as `ftc lint -t all` checks a file at `output` (stdout: the current
    folder): the spec's rules and those of the targets it is for.

    Raises SpecError with every error found; lint warnings go to `on_warning`.
    """
    text = spec_text(imported)
    label = str(output) if output is not None else "<imported spec>"
    doc = parse_spec_text(text.encode("utf-8"), label)
    doc.base_dir = (output.resolve().parent if output is not None else Path.cwd())
    resolved = resolve_doc(doc, [])
    plans = [plan_for(resolved, target, doc.base_dir) for target in expand_targets(["all"], resolved)]
    findings = findings_for(resolved, plans)
    errors = [as_problem(resolved, f) for f in findings if f.severity == "error"]
    if errors:
        raise SpecError(errors)
    for finding in findings:
        on_warning(as_problem(resolved, finding))
    return text
