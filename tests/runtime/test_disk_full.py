"""A full disk while saving: one line (where, how much, the last good checkpoint, how to resume), MLflow run FAILED.

The runs write into a real, small tmpfs mounted in a private mount namespace (`unshare`), so nothing
is left mounted; what the run left there is copied out before the namespace ends.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.conftest import REPO

pytestmark = pytest.mark.slow

# Mount a tmpfs of size $1 on $2, run the rest, copy what the run left to $3, exit with the run's code.
IN_TMPFS = 'mount -t tmpfs -o "size=$1" tmpfs "$2" || exit 99; shift 3; "$@"; code=$?; cp -a "$OUT/." "$COPY"; exit $code'


def _unshare() -> list[str]:
    """The unshare command that gives this user a mount namespace to mount a tmpfs in (root: -m; else -rm)."""
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-rm"]


@pytest.fixture
def tmpfs_run(tmp_path: Path):
    """`tmpfs_run(size, args, cwd)`: `python -m ftc.runtime ARGS` writing into a tmpfs of `size` at tmp_path/full;
    returns (exit code, stderr, the folder's contents as the run left them)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a small tmpfs in a private mount namespace")
    probe = tmp_path / "probe"
    probe.mkdir()
    tried = subprocess.run([*_unshare(), "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True, text=True)
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here ({tried.stderr.strip()})")

    def run(size: str, args: list[str], cwd: Path) -> tuple[int, str, Path]:
        out, copy = tmp_path / "full", tmp_path / "after"
        out.mkdir()
        copy.mkdir()
        env = {
            **os.environ, "OUT": str(out), "COPY": str(copy), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
        for name in ("RANK", "WORLD_SIZE", "MLFLOW_TRACKING_URI"):
            env.pop(name, None)
        command = [sys.executable, "-m", "ftc.runtime", *args, "--output_dir", str(out)]
        done = subprocess.run(
            [*_unshare(), "sh", "-c", IN_TMPFS, "sh", size, str(out), str(copy), *command],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode != 99, done.stderr
        return done.returncode, done.stderr, copy

    return run


def _mlflow_status(uri: str, run_id: str) -> str:
    from mlflow.tracking import MlflowClient

    return str(MlflowClient(tracking_uri=uri).get_run(run_id).info.status)


def _assert_one_clean_line(err: str) -> str:
    """The error line; no traceback from torch, safetensors, SQLite or MLflow."""
    for noise in ("Traceback", "inline_container", "SafetensorError", "sqlite3", "SQLAlchemy", "Logging error"):
        assert noise not in err, err
    errors = [line for line in err.splitlines() if line.startswith("ftc.runtime: error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_a_checkpoint_that_does_not_fit_is_one_line_and_the_run_failed(compile_config, project: Path, tmp_path: Path, tmpfs_run) -> None:
    """3 MiB: the MLflow store (about 1 MB) and checkpoint-4 (1.2 MB) fit, checkpoint-8 does not."""
    config = compile_config()
    every_4 = ["--evaluation_strategy", "steps", "--eval_steps", "4", "--save_total_limit", "-1", "--max_steps", "12"]
    code, err, left = tmpfs_run("3m", ["--config", str(config), *every_4], project)
    assert code == 1, err
    line = _assert_one_clean_line(err)
    out = tmp_path / "full"
    assert line.startswith(f"ftc.runtime: error: the disk is full: no space left in {out / 'pytorch_model_folder'} (")
    assert "while writing checkpoint-8, which needs about 1.2 MB (the size of checkpoint-4)" in line
    assert "the half-written checkpoint-8 was removed" in line
    assert f"the last good checkpoint is checkpoint-4 in {out / 'pytorch_model_folder'}" in line
    assert line.endswith(f"to resume, run the same command with --output_dir {out} --resume_from_checkpoint true")
    assert sorted(p.name for p in (left / "pytorch_model_folder").iterdir()) == ["checkpoint-4"]
    assert "the disk is full" in (left / "ftc_runtime.log").read_text()
    run_id = json.loads((left / "ftc_tracking.json").read_text())["mlflow_run_id"]
    assert _mlflow_status(f"sqlite:///{left / 'mlflow.db'}", run_id) == "FAILED"  # the store on the full disk too


def test_a_final_model_that_does_not_fit_is_one_line(compile_config, project: Path, tmp_path: Path, tmpfs_run) -> None:
    """256 KiB, no checkpoints: the tiny model's weights (377 KB) do not fit; the MLflow store is elsewhere."""
    config = compile_config()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--config", str(config), "--evaluation_strategy", "no", "--max_steps", "2", "--tracking_uri", uri]
    code, err, left = tmpfs_run("256k", args, project)
    assert code == 1, err
    line = _assert_one_clean_line(err)
    assert f"the disk is full: no space left in {tmp_path / 'full' / 'pytorch_model_folder'}" in line
    assert "while writing the final model; its half-written files (config.json" in line
    assert line.endswith("there is no checkpoint to resume from: free some space and run the same command again")
    assert not (left / "pytorch_model_folder" / "model.safetensors").exists()
    run_id = json.loads((left / "ftc_tracking.json").read_text())["mlflow_run_id"]
    assert _mlflow_status(uri, run_id) == "FAILED"


def test_disk_full_is_recognised_in_every_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.runtime import disk

    def chained(outer: Exception, inner: Exception) -> Exception:
        try:
            try:
                raise inner
            except Exception:
                raise outer  # noqa: B904 (an implicit context, as torch.save's)
        except Exception as exc:
            return exc

    torch_save = chained(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 532672 vs 532560"),
                         RuntimeError("basic_ios::clear: iostream error"))
    assert disk.is_disk_full(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert disk.is_disk_full(chained(RuntimeError("saving failed"), OSError(errno.EDQUOT, "Disk quota exceeded")), tmp_path)
    assert disk.is_disk_full(Exception("Error while serializing: I/O error: No space left on device (os error 28)"), tmp_path)
    assert disk.is_disk_full(Exception("(sqlite3.OperationalError) database or disk is full"), tmp_path)
    assert not disk.is_disk_full(torch_save, tmp_path)  # no errno: only when the disk really is (almost) full
    monkeypatch.setattr(disk, "space", lambda folder: (4096, 10 * 2**30))
    assert disk.is_disk_full(torch_save, tmp_path)
    assert not disk.is_disk_full(RuntimeError("CUDA out of memory"), tmp_path)
