"""targets.enabled: the targets a spec is for; `-t all` means these, another target is an error (FTC002)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftc.backends.registry import backends
from ftc.cli.lint_report import lint_file
from ftc.compiler.build import compile_spec
from ftc.errors import SpecError

TWO_NODES = """\
task: causal_lm
model: /models/m
data: {train_file_path: /data/train.jsonl}
checkpointing: {output_dir: /shared/runs/m}
resources: {nodes: 2, processes_per_node: 8}
"""


def _spec(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(TWO_NODES + extra)
    return path


def _rules(path: Path, targets: list[str]) -> list[str]:
    return [f.rule for f in lint_file(path, [], targets).findings if f.severity == "error"]


def test_all_means_every_target_by_default(tmp_path: Path) -> None:
    """Without targets.enabled, `-t all` runs every target's checks: the local target refuses two nodes."""
    assert "FTC201" in _rules(_spec(tmp_path), ["all"])


@pytest.mark.parametrize("form", ["targets: [slurm, ray]\n", "targets: {enabled: [slurm, ray]}\n"])
def test_all_means_the_spec_targets(tmp_path: Path, form: str) -> None:
    assert _rules(_spec(tmp_path, form), ["all"]) == []


def test_a_target_the_spec_is_not_for_is_an_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "targets: [slurm]\n")
    (finding,) = [f for f in lint_file(spec, [], ["local"]).findings if f.severity == "error"]
    assert (finding.rule, finding.key, finding.location.line) == ("FTC002", "targets.enabled", 6)
    assert "not for local" in finding.message
    with pytest.raises(SpecError, match="FTC002"):
        compile_spec(spec, ["local"], tmp_path / "build")
    assert not (tmp_path / "build").exists()


def test_compile_all_writes_only_the_spec_targets(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "targets: [slurm, azureml]\n")
    written = compile_spec(spec, ["all"], tmp_path / "build")
    assert sorted(p.name for p in written) == ["azureml", "slurm"]


def test_unknown_target_names_the_choices(tmp_path: Path) -> None:
    (finding,) = lint_file(_spec(tmp_path, "targets: [slurm, rey]\n"), [], []).findings
    assert finding.rule == "FTC001"
    assert all(name in finding.message for name in backends())
