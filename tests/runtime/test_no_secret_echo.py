"""No secret reaches the runtime's output or log, whether it came on the command line or from the environment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime.conftest import run_module

TOKEN = "hf_" + "A1b2C3d4E5" * 4
PASSWORD = "s3cretPassw0rd"
# A refused connection fails at once instead of after MLflow's minutes of retries.
NO_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}


def _files_holding(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize(
    ("option", "value", "secret", "shown"),
    [
        ("tracking_uri", f"http://u:{PASSWORD}@127.0.0.1:9/", PASSWORD, "--tracking_uri http://***@127.0.0.1:9/"),
        ("experiment_name", TOKEN, TOKEN, "--experiment_name ***"),
    ],
    ids=["a URL password", "a token"],
)
def test_a_secret_on_the_command_line_is_refused_unechoed(
    compile_config: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    option: str,
    value: str,
    secret: str,
    shown: str,
) -> None:
    for name, setting in NO_RETRIES.items():
        monkeypatch.setenv(name, setting)
    out = tmp_path / "out"
    result = run_module(["--config", str(compile_config()), "--output_dir", str(out), f"--{option}", value], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert secret not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"ftc.runtime: error: {shown}: looks like a literal token, key or password")
    assert _files_holding(tmp_path, secret) == []


def test_a_secret_from_the_environment_is_masked_in_output_and_log(
    compile_config: Callable[..., Path], run_inprocess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://u:{PASSWORD}@127.0.0.1:9/")
    for name, setting in NO_RETRIES.items():
        monkeypatch.setenv(name, setting)
    out = tmp_path / "out"
    code, stdout, stderr = run_inprocess(compile_config(), "--output_dir", str(out))
    assert code == 1, stderr
    assert PASSWORD not in stdout + stderr and "Traceback" not in stderr
    (error,) = [line for line in stderr.splitlines() if line.startswith("ftc.runtime: error: ")]
    assert "MLflow" in error and "http://***@127.0.0.1:9/" in error
    log = (out / "ftc_runtime.log").read_text()
    assert f"ERROR ftc.runtime: {error.removeprefix('ftc.runtime: error: ')}" in log
    assert _files_holding(tmp_path, PASSWORD) == []


def test_the_runtime_log_masks_messages_arguments_and_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ftc.runtime.logs import RunLogs, log, train_log

    logs = RunLogs(tmp_path, is_main=True)
    try:
        log.warning("store http://u:%s@127.0.0.1:9/ refused", PASSWORD)
        train_log.info({"note": TOKEN})
        try:
            raise ValueError(f"token {TOKEN}")
        except ValueError:
            log.exception("failed")
    finally:
        logs.close()
    written = (tmp_path / "ftc_runtime.log").read_text()
    console = capsys.readouterr().err
    for text in (written, console):
        assert PASSWORD not in text and TOKEN not in text
    assert "store http://***@127.0.0.1:9/ refused" in written and "ValueError: token ***" in written
    assert "[ftc] store http://***@127.0.0.1:9/ refused" in console
