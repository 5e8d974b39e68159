"""The golden cases' specs, shared by the golden-file and fuzz tests, and the targets each compiles for."""

from __future__ import annotations

from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"


def golden_specs() -> list[Path]:
    return sorted(GOLDEN.glob("*/spec.yaml"))


def golden_targets(case: str) -> list[str]:
    """The targets a golden case is compiled for and recorded: what `-t all` means for its spec."""
    from ftc.compiler.build import expand_targets, load_resolved

    return expand_targets(["all"], load_resolved(GOLDEN / case / "spec.yaml"))
