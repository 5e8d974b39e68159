"""Signals reach the training that `ftc run` / `ftc submit -t local` started: it stops, nothing is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftc.backends.local import LocalBackend
from ftc.cli.app import app
from tests.runtime.conftest import REPO, TINY_SPEC, project, tiny_data, tiny_model  # noqa: F401 (fixtures)

# Far more epochs than the test waits for: the run is still training when the signal comes.
LONG_SPEC = TINY_SPEC.replace("num_train_epochs: 8", "num_train_epochs: 1000")


def processes_naming(text: str) -> list[int]:
    """The live processes whose command line contains `text` (found through /proc, zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def wait_until_training(out: Path, ftc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the first epoch's checkpoint is written (the runtime is training), or fail if ftc ended."""
    checkpoints = out / "pytorch_model_folder"
    while not any(checkpoints.glob("checkpoint-*")):
        assert ftc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "signum"),
    [("run", signal.SIGTERM), ("run", signal.SIGINT), ("run", signal.SIGHUP), ("submit", signal.SIGTERM)],
    ids=["run-TERM", "run-INT", "run-HUP", "submit-TERM"],
)
def test_signal_stops_the_training_and_cleans_up(project: Path, tmp_path: Path, command: str, signum: signal.Signals) -> None:
    (project / "spec.yaml").write_text(LONG_SPEC)
    out = tmp_path / f"runs-{command}-{signum.name}"
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "TMPDIR": str(tmpdir)}
    env.pop("FTC_PYTHON", None)
    args = ["run", "spec.yaml", "--output", str(out)] if command == "run" else ["submit", "spec.yaml", "-t", "local", "--", "--output_dir", str(out)]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr_file:  # a file, not a pipe: an orphaned runtime would keep a pipe open
        ftc = subprocess.Popen(
            [sys.executable, "-m", "ftc.cli", *args], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=stderr_file,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_until_training(out, ftc, log)
        os.kill(ftc.pid, signum)  # to ftc alone, as `kill` or a scheduler does
        ftc.wait(timeout=300)
        stderr = log.read_text()
        assert ftc.returncode == 128 + signum, stderr[-3000:]
        assert processes_naming(str(out)) == []  # the runtime did not outlive ftc
        assert list(tmpdir.iterdir()) == []  # the temporary build folder is gone
        assert "Traceback" not in stderr, stderr[-3000:]
    finally:
        for pid in processes_naming(str(out)):  # orphans of a failing run
            os.kill(pid, signal.SIGKILL)
        ftc.kill()


def test_a_run_that_ignores_the_signal_is_killed_after_the_grace_period(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime gets STOP_GRACE_S to checkpoint and exit; then its whole process group is killed."""
    marker, ready = f"ftc-test-{tmp_path}", tmp_path / "ready"
    (tmp_path / "run.sh").write_text(f"trap '' TERM\ntouch {ready}\nexec -a {marker} sleep 20\n")
    monkeypatch.setattr("ftc.backends.local.STOP_GRACE_S", 0.5)
    handler = signal.getsignal(signal.SIGTERM)
    received: list[int] = []

    def record(signum: int, frame: object) -> None:  # the test's own handler, replaced by submit's while it runs
        received.append(signum)

    signal.signal(signal.SIGTERM, record)

    def terminate_when_ready() -> None:
        while not ready.exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=terminate_when_ready)
    sender.start()
    try:
        assert LocalBackend().submit(tmp_path, []).exit_code == 128 + signal.SIGTERM
        assert processes_naming(marker) == [] and received == []
        assert signal.getsignal(signal.SIGTERM) is record  # submit put the previous handler back
    finally:
        sender.join()
        signal.signal(signal.SIGTERM, handler)


def test_a_signal_while_compiling_ends_ftc_run_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the run starts there is nothing to pass the signal on to: ftc ends, its temporary folder removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    handler = signal.getsignal(signal.SIGTERM)

    def record(signum: int, frame: object) -> None:  # the test's own handler, replaced by ftc's while it runs
        pass

    def terminated_while_compiling(*args: object, **kwargs: object) -> list[Path]:
        assert [p.name[:8] for p in tmp_path.iterdir()] == ["ftc-run-"]
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal did not end the command")

    monkeypatch.setattr("ftc.compiler.build.compile_spec", terminated_while_compiling)
    signal.signal(signal.SIGTERM, record)
    try:
        result = CliRunner().invoke(app, ["run", "spec.yaml", "--output", str(tmp_path / "out")])
        assert result.exit_code == 128 + signal.SIGTERM, result.output
        assert list(tmp_path.iterdir()) == []
        assert signal.getsignal(signal.SIGTERM) is record  # ftc put the previous handler back
    finally:
        signal.signal(signal.SIGTERM, handler)
