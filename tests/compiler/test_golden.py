"""Golden files: the compiler's output for each case under tests/golden/ must match byte for byte.

Run `pytest tests/compiler/test_golden.py --update-golden` to rewrite them after an intended change.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

from ftc.cli.lint_report import lint_file
from ftc.compiler.build import compile_spec

from tests.golden_cases import golden_targets

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "spec.yaml").exists())


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, tmp_path: Path, update_golden: bool) -> None:
    work = tmp_path / case
    work.mkdir()
    shutil.copy(GOLDEN / case / "spec.yaml", work / "spec.yaml")
    targets = golden_targets(case)
    compile_spec(work / "spec.yaml", targets, work / "build")
    for target in targets:
        produced = work / "build" / target
        expected = GOLDEN / case / target
        if update_golden:
            shutil.rmtree(expected, ignore_errors=True)
            shutil.copytree(produced, expected)
            continue
        got = sorted(p.relative_to(produced).as_posix() for p in produced.rglob("*") if p.is_file())
        want = sorted(p.relative_to(expected).as_posix() for p in expected.rglob("*") if p.is_file())
        assert got == want, f"{case}/{target}: files differ"
        for name in got:
            a, b = (expected / name).read_text(), (produced / name).read_text()
            if a != b:
                diff = "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "golden", "produced"))
                pytest.fail(f"{case}/{target}/{name} differs (intended? run with --update-golden):\n{diff}")


@pytest.mark.parametrize("case", CASES)
def test_golden_spec_lints_clean(case: str) -> None:
    findings = lint_file(GOLDEN / case / "spec.yaml", []).findings
    assert findings == [], "\n".join(f"{f.location}: {f.rule} {f.message}" for f in findings)
