"""The golden cases' specs, shared by the golden-file and fuzz tests."""

from __future__ import annotations

from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"


def golden_specs() -> list[Path]:
    return sorted(GOLDEN.glob("*/spec.yaml"))
