"""The golden cases' specs, shared by the golden-file and fuzz tests, and the targets each compiles for."""

from __future__ import annotations

from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"

# Cases that are not for every target, with the targets they compile for (the local target runs one node).
CASE_TARGETS = {"llm_lora_2x8_gpu": ("slurm", "ray", "azureml")}


def golden_specs() -> list[Path]:
    return sorted(GOLDEN.glob("*/spec.yaml"))


def golden_targets(case: str) -> list[str]:
    """The targets a golden case is compiled for and recorded: its CASE_TARGETS, else every target."""
    from ftc.backends.registry import backends

    return list(CASE_TARGETS.get(case, backends()))
