"""Compiles into one build folder take turns: a lock on the folder, stale staging folders cleaned."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ftc.backends.registry import backends
from ftc.compiler import write
from ftc.compiler.build import compile_spec
from ftc.errors import CompileError, Problem

TARGETS = list(backends())


def seeds_in(out: Path) -> dict[str, int]:
    """The training seed each target folder was compiled with."""
    return {t: json.loads((out / t / "ftc.resolved.json").read_text())["training"]["seed"] for t in TARGETS}


def test_concurrent_compiles_do_not_mix_builds(write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six compiles started at once with different seeds: every target comes from the same one."""
    spec, out = write_spec(), tmp_path / "build"
    compile_spec(spec, ["all"], out, ["training.seed=100"])
    seeds = list(range(6))
    swapping = threading.Barrier(len(seeds))
    put = write._Swap.put

    def racing_put(self: write._Swap, target: str) -> Path:
        if not self.moved:  # a compile's first swap waits for the others to get there (none can, with the lock)
            with contextlib.suppress(threading.BrokenBarrierError):
                swapping.wait(timeout=1)
        final = put(self, target)
        time.sleep(0.02)  # widens the window between two targets' swaps
        return final

    monkeypatch.setattr(write._Swap, "put", racing_put)

    def compile_(seed: int) -> str:
        try:
            compile_spec(spec, ["all"], out, [f"training.seed={seed}"])
        except CompileError as exc:
            return str(exc)
        return "ok"

    with ThreadPoolExecutor(len(seeds)) as pool:
        results = list(pool.map(compile_, seeds))
    assert results == ["ok"] * len(seeds)
    assert len(set(seeds_in(out).values())) == 1, seeds_in(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(TARGETS)  # no staging folder, no lock file


def test_a_held_lock_ends_in_a_clear_error(write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, out = write_spec(), tmp_path / "build"
    compile_spec(spec, ["local"], out)
    before = (out / "local" / "ftc.resolved.json").read_bytes()
    monkeypatch.setattr(write, "LOCK_TIMEOUT_S", 0.3)
    with (out / write.LOCK_NAME).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another compile, writing this folder
        with pytest.raises(CompileError, match=r"build: another ftc compile is writing this folder \(waited 0.3 s\)"):
            compile_spec(spec, ["local"], out, ["training.seed=3"])
    assert (out / "local" / "ftc.resolved.json").read_bytes() == before


def test_a_stale_staging_folder_is_removed(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """What a compile killed while staging leaves: the next compile removes it."""
    spec, out = write_spec(), tmp_path / "build"
    compile_spec(spec, ["local"], out)
    stale = out / ".ftc-staging-killed"
    (stale / "local").mkdir(parents=True)
    (stale / "local" / "run.sh").write_text("half written")
    compile_spec(spec, ["local"], out)
    assert sorted(p.name for p in out.iterdir()) == ["local"]


def test_a_staging_folder_holding_a_previous_build_is_kept(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """A previous build that could not be restored stays where the error said it is, and each compile says so."""
    spec, out = write_spec(), tmp_path / "build"
    compile_spec(spec, ["local"], out)
    kept = out / ".ftc-staging-failed" / ".old-slurm"
    kept.mkdir(parents=True)
    (kept / "job.sbatch").write_text("the previous build")
    warnings: list[Problem] = []
    compile_spec(spec, ["local"], out, on_warning=warnings.append)
    assert (kept / "job.sbatch").read_text() == "the previous build"
    assert [str(w) for w in warnings] == [
        f"{out / '.ftc-staging-failed'}: holds a previous build that could not be restored (.old-slurm); "
        "move what you need out of it, then delete it"
    ]


def test_a_file_system_without_locks_compiles_with_a_warning(write_spec: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lustre mounted without flock, say: the compile goes ahead and says the folder is not locked."""

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    out, warnings = tmp_path / "build", list[Problem]()
    compile_spec(write_spec(), ["local"], out, on_warning=warnings.append)
    assert f"{out}: cannot be locked (Function not implemented): compiles into it at the same time can mix their builds" in map(str, warnings)
    assert sorted(p.name for p in out.iterdir()) == ["local"]
