"""`ftc run` and the local target end to end: a real (tiny) model trains from a spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.conftest import REPO, TINY_SPEC, project, tiny_data, tiny_model  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def ftc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("FTC_PYTHON", None)
    return subprocess.run([sys.executable, "-m", "ftc.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_ftc_run_trains_and_writes_outputs(project: Path) -> None:
    (project / "spec.yaml").write_text(TINY_SPEC)
    result = ftc("run", "spec.yaml", "--output", "runs/tc", cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    out = project / "runs" / "tc"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_accuracy"] >= 0.9 > metrics["initial_eval_accuracy"]
    assert (out / "pytorch_model_folder" / "config.json").exists()
    assert (out / "ftc_runtime.log").exists()
    assert not (project / "out").exists()  # --output wins over the spec's output_dir


def test_local_target_runs_two_processes_with_torchrun(project: Path) -> None:
    spec = TINY_SPEC + "resources:\n  processes_per_node: 2\n  device: cpu\n"
    (project / "spec.yaml").write_text(spec)
    compiled = ftc("compile", "spec.yaml", "-t", "local", "-o", "build", cwd=project)
    assert compiled.returncode == 0, compiled.stderr
    script = (project / "build" / "local" / "run.sh").read_text()
    assert "torch.distributed.run --standalone --nnodes 1 --nproc_per_node 2" in script
    env = {**os.environ, "FTC_PYTHON": sys.executable, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        ["bash", "build/local/run.sh", "--output_dir", "runs/ddp"], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((project / "runs" / "ddp" / "metrics.json").read_text())
    assert metrics["eval_accuracy"] > metrics["initial_eval_accuracy"]
    log = (project / "runs" / "ddp" / "ftc_runtime.log").read_text()
    assert "x 2 process(es)" in log  # one log, written by rank 0, about a world of two
