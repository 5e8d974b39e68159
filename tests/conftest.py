"""Shared fixtures: spec files written on the fly, and the golden-file update switch."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import ftc.backends.registry  # noqa: F401  (registers the targets with the spec layer, as the CLI and compiler do)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MINIMAL = """\
task: text_classification
model: ./models/tiny
data:
  train_file_path: data/train.jsonl
  validation_file_path: data/validation.jsonl
"""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite tests/golden/ from the current compiler.")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec (dedented) to a file in tmp_path and return its path."""

    def write(text: str = MINIMAL, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
