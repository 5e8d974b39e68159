"""What `ftc submit` prints and exits with for each target, from the target's typed result or its SubmitError.

The schedulers are stand-ins: an `sbatch` script on PATH, a Ray job client and an Azure ML client that
answer as the real ones do, so the whole command runs (compile, submit, report) without a cluster.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from ftc.backends.base import Submitted
from ftc.cli.app import app
from tests.backends.test_registry import plugin_on_path  # noqa: F401 (fixture)
from tests.backends.test_slurm import fake_sbatch
from tests.conftest import MINIMAL

# absolute output and model folders: no FTC406 or FTC413 warning
RAY_SPEC = MINIMAL.replace("model: ./models/tiny", "model: /shared/models/tiny") + "checkpointing: {output_dir: /shared/runs/tc}\n"
RAY_LOGS = ["epoch 1: loss 0.69\n", "\x1b[36m(RayTrainWorker pid=7)\x1b[0m epoch 2: loss 0.41\n"]  # colours as Ray sends them


def submit(spec: Path, target: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["submit", str(spec), "-t", target, *args])


# --------------------------------------------------------------------------- slurm


def test_slurm_prints_the_job_id_alone(write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stdout is the job id and nothing else (JOB=$(ftc submit ...)); where the build went is on stderr."""
    fake_sbatch(tmp_path, monkeypatch)
    result = submit(write_spec(MINIMAL), "slurm")
    assert (result.exit_code, result.stdout) == (0, "77\n"), result.stderr
    assert result.stderr.startswith(f"ftc: the job uses the build copied to {tmp_path / '.ftc-slurm'}/")


def test_slurm_refusal_is_sbatch_message_and_exit_code(
    write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sbatch(tmp_path, monkeypatch, 'echo "sbatch: error: invalid partition specified: gpu" >&2; exit 3')
    result = submit(write_spec(MINIMAL), "slurm")
    assert (result.exit_code, result.stdout) == (3, "")
    assert "error: sbatch failed (exit 3): sbatch: error: invalid partition specified: gpu\n" in result.stderr


# --------------------------------------------------------------------------- ray


class FakeRayClient:
    """JobSubmissionClient's part that submit uses: the job ends in `final`; its log stream breaks when `breaks`,
    and ftc gets SIGINT (Ctrl-C) after the first chunk when `interrupt`."""

    final = "SUCCEEDED"
    breaks = False
    interrupt = False

    def __init__(self, url: str) -> None:
        self.url = url

    def submit_job(self, **kwargs: Any) -> str:
        return "raysubmit_7"

    async def tail_job_logs(self, job_id: str) -> AsyncIterator[str]:
        for chunk in RAY_LOGS:
            yield chunk
            if self.interrupt:
                os.kill(os.getpid(), signal.SIGINT)
                await asyncio.sleep(60)  # the signal ends the command first
        if self.breaks:
            raise ConnectionError("connection reset")

    def get_job_status(self, job_id: str) -> Any:
        from ray.job_submission import JobStatus

        return JobStatus(self.final)

    def get_job_info(self, job_id: str) -> Any:
        message = "Job finished successfully." if self.final == "SUCCEEDED" else "Job entrypoint command failed with exit code 1"
        return SimpleNamespace(message=message)


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> type[FakeRayClient]:
    import ray.job_submission

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", FakeRayClient)
    monkeypatch.setattr("ftc.backends.ray.probe", lambda url: "2.60.0")
    return FakeRayClient


def test_ray_streams_the_logs_and_reports_success(write_spec: Callable[..., Path], fake_ray: type[FakeRayClient]) -> None:
    result = submit(write_spec(RAY_SPEC), "ray", "--address", "head:8265")
    assert (result.exit_code, result.stdout) == (0, "".join(RAY_LOGS)), result.stderr
    assert result.stderr.splitlines() == [
        "ftc: submitted Ray job raysubmit_7 to http://head:8265 (Ray 2.60.0); following its logs",
        "ftc: Ray job raysubmit_7 SUCCEEDED",
    ]


def test_ray_failed_job_exits_1_with_ray_message(
    write_spec: Callable[..., Path], fake_ray: type[FakeRayClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_ray, "final", "FAILED")
    monkeypatch.setattr(fake_ray, "breaks", True)
    result = submit(write_spec(RAY_SPEC), "ray", "--address", "http://head:8265")
    assert (result.exit_code, result.stdout) == (1, "".join(RAY_LOGS)), result.stderr
    assert result.stderr.splitlines()[1:] == [
        "ftc: the log stream of raysubmit_7 broke (connection reset); waiting for the job to end",
        "ftc: Ray job raysubmit_7 FAILED: Job entrypoint command failed with exit code 1",
    ]


def test_ray_interrupted_says_the_job_goes_on(
    write_spec: Callable[..., Path], fake_ray: type[FakeRayClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while following ends ftc (130), not the job: ftc says how to stop it."""
    monkeypatch.setattr(fake_ray, "interrupt", True)
    result = submit(write_spec(RAY_SPEC), "ray", "--address", "http://head:8265")
    assert (result.exit_code, result.stdout) == (128 + signal.SIGINT, RAY_LOGS[0]), result.stderr
    assert result.stderr.splitlines()[1:] == [
        "ftc: stopped following; the job goes on. Stop it with: ray job stop --address http://head:8265 raysubmit_7"
    ]


def test_ray_without_an_address_is_an_error(write_spec: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    result = submit(write_spec(RAY_SPEC), "ray")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith("error: no Ray address: pass --address http://HEAD:8265")


# --------------------------------------------------------------------------- azureml


class FakeMLClient:
    """MLClient's part that submit uses: creating a job answers with its name and studio page."""

    def __init__(self, credential: object, *, subscription_id: str, resource_group: str, workspace_name: str) -> None:
        self.workspace_name = workspace_name
        self.jobs = SimpleNamespace(create_or_update=self.create)

    def create(self, job: Any, experiment_name: str) -> Any:
        return SimpleNamespace(name="happy_job_1", studio_url="https://ml.azure.com/runs/happy_job_1")


def test_azureml_prints_the_job_and_its_page(write_spec: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.ai.ml

    monkeypatch.setattr(azure.ai.ml, "MLClient", FakeMLClient)
    monkeypatch.setattr("ftc.backends.azureml._credential", lambda timeout: object())
    workspace = "targets:\n  azureml: {subscription_id: s, resource_group: rg, workspace_name: ws, ftc_requirement: ftc}\n"
    result = submit(write_spec(MINIMAL + workspace), "azureml")
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr
    assert result.stdout == "submitted happy_job_1 to ws\nhttps://ml.azure.com/runs/happy_job_1\n"


# --------------------------------------------------------------------------- no submit step, and the report itself


def test_target_without_submit_step(plugin_on_path: Path, write_spec: Callable[..., Path]) -> None:  # noqa: F811
    result = submit(write_spec(MINIMAL), "echo")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == "error: target echo has no submit step yet\n"


@pytest.mark.parametrize(
    ("submitted", "stdout", "stderr"),
    [
        (Submitted("local", exit_code=3), "", ""),
        (Submitted("x", job_id="9", where="c", parsable=True), "9\n", ""),
        (Submitted("x", job_id="j", job_kind="X job", where="ws"), "submitted j to ws\n", ""),
        (Submitted("x", job_id="j", job_kind="X job", where="d", state="STOPPED", exit_code=1), "", "ftc: X job j STOPPED\n"),
    ],
    ids=["ran-here", "parsable", "no-page", "stopped"],
)
def test_report(submitted: Submitted, stdout: str, stderr: str, capsys: pytest.CaptureFixture[str]) -> None:
    from ftc.cli.app import _report

    _report(submitted)
    assert capsys.readouterr() == (stdout, stderr)
