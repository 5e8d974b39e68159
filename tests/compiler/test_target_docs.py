"""Each target's page in docs/targets/ is generated, compiles its worked example, and is fresh."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftc.backends.registry import backends
from ftc.compiler.target_docs import render_target_docs

DOCS = Path(__file__).resolve().parents[2] / "docs" / "targets"


@pytest.mark.parametrize("name", list(backends()))
def test_target_page_is_fresh(name: str) -> None:
    page = render_target_docs(name)
    assert f"# The `{name}` target" in page and "## Worked example" in page
    assert (DOCS / f"{name}.md").exists(), f"run `make docs` (ftc docs --target {name} > docs/targets/{name}.md)"
    assert (DOCS / f"{name}.md").read_text() == page, f"docs/targets/{name}.md drifted: run `make docs`"
