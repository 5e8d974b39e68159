"""Every shipped example passes lint and compiles for every target (as torchtune checks its configs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftc.cli.lint_report import lint_file
from ftc.compiler.build import compile_spec
from ftc.spec.fields import TASKS

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


def test_one_example_per_task() -> None:
    assert {p.stem for p in EXAMPLES} == set(TASKS)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_lints_clean(example: Path) -> None:
    findings = lint_file(example, []).findings
    assert findings == [], "\n".join(f"{f.location}: {f.rule} {f.message}" for f in findings)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles_for_every_target(example: Path, tmp_path: Path) -> None:
    assert compile_spec(example, ["all"], tmp_path / "build")
