"""User errors at run time are one line and a non-zero exit, never a traceback: the output folder, deep values."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ftc.runtime.config import Override, load_config
from ftc.runtime.errors import UsageError
from tests.runtime.conftest import REPO

DEEP = "[" * 3000 + "]" * 3000


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    (line,) = err.splitlines()
    return line


def test_an_output_dir_that_is_a_file(compile_config: Callable[..., Path], run_inprocess, tmp_path: Path) -> None:
    file = tmp_path / "taken"
    file.write_text("")
    code, _, err = run_inprocess(compile_config(), "--output_dir", str(file))
    assert code == 2
    assert _one_error_line(err) == f"ftc.runtime: error: output_dir: {file} is a file, not a folder"


def test_an_output_dir_under_a_file(compile_config: Callable[..., Path], run_inprocess, tmp_path: Path) -> None:
    file = tmp_path / "taken"
    file.write_text("")
    code, _, err = run_inprocess(compile_config(), "--output_dir", str(file / "runs" / "a"))
    assert code == 2
    assert _one_error_line(err) == f"ftc.runtime: error: output_dir: cannot create {file}/runs/a: {file} is a file, not a folder"


def test_the_trainer_checks_the_output_dir_when_called_directly(compile_config: Callable[..., Path], tmp_path: Path) -> None:
    """Ray's entry point calls trainer.run without main(): the same one-line error."""
    from ftc.runtime.trainer import run

    file = tmp_path / "taken"
    file.write_text("")
    cfg = load_config(compile_config(), [Override("output_dir", str(file))])
    with pytest.raises(UsageError, match="is a file, not a folder"):
        run(cfg)


def _read_only_mounts_work(folder: Path) -> bool:
    """Whether this machine lets a user namespace mount a read-only tmpfs (unshare -rm)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(folder)], capture_output=True)
    return probe.returncode == 0


def test_an_output_dir_on_a_read_only_file_system(compile_config: Callable[..., Path], project: Path) -> None:
    read_only = project / "read-only"
    read_only.mkdir()
    if not _read_only_mounts_work(read_only):
        pytest.skip("cannot mount a read-only tmpfs here (no unshare, or user namespaces are off)")
    config = compile_config()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    for out in (read_only, read_only / "run"):
        mount = 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"'
        command = ["unshare", "-rm", "sh", "-c", mount, str(read_only), sys.executable, "-m", "ftc.runtime"]
        result = subprocess.run(
            [*command, "--config", str(config), "--output_dir", str(out)], capture_output=True, text=True, env=env, timeout=120
        )
        assert result.returncode == 2
        assert _one_error_line(result.stderr) == f"ftc.runtime: error: output_dir: cannot write in {out}: Read-only file system"


@pytest.mark.parametrize("option", ["learning_rate", "env.vars.X", "optimizer.learning_rate"])
def test_a_deep_runtime_override(compile_config: Callable[..., Path], run_inprocess, option: str) -> None:
    code, _, err = run_inprocess(compile_config(), f"--{option}", DEEP)
    assert code == 2
    assert _one_error_line(err).endswith(": nests deeper than 40 levels")
