"""Writing builds: every target swapped in or none, only ftc builds replaced, modes whatever the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ftc.compiler.build import compile_spec
from ftc.compiler.write import Artifact, is_ftc_build, manifest, write_builds
from ftc.errors import CompileError
from tests.conftest import MINIMAL

REPO = Path(__file__).resolve().parents[2]
HEADER = {"generated_by": "ftc 0.0.0", "spec": "s.yaml", "spec_sha256": "0", "target": "t"}


def build(text: str, *, nested: bool = False) -> list[Artifact]:
    """A target's files with its manifest, as `render_plan` gives them."""
    files = [Artifact("run.sh", f"#!/bin/sh\necho {text}\n".encode(), 0o755), Artifact("config.json", text.encode())]
    if nested:
        files.append(Artifact("environment/conda.yaml", b"name: x\n"))
    return [*files, manifest(files, HEADER)]


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output folder holding an earlier build of targets a and b."""
    folder = tmp_path / "build"
    write_builds(folder, {"a": build("old a"), "b": build("old b")})
    return folder


def failing_rename(monkeypatch: pytest.MonkeyPatch, fail_when: Callable[[Path], bool], error: BaseException | None = None) -> None:
    """os.rename that raises `error` (EPERM, as for an immutable folder) when `fail_when(src)`."""
    real = os.rename

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if fail_when(Path(src)):
            raise error or PermissionError(1, "Operation not permitted", str(src))
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)


def staged(name: str) -> Callable[[Path], bool]:
    """The new build of target `name`, moved from the staging folder."""
    return lambda src: src.name == name and src.parent.name.startswith(".ftc-staging-")


@pytest.mark.parametrize(
    "fail_when",
    [staged("b"), lambda src: src.name == "b" and not staged("b")(src)],
    ids=["new-build-of-second-target", "old-build-of-second-target"],
)
def test_failed_swap_restores_every_target(out: Path, monkeypatch: pytest.MonkeyPatch, fail_when: Callable[..., bool]) -> None:
    before = {t: tree(out / t) for t in ("a", "b")}
    failing_rename(monkeypatch, fail_when)
    with pytest.raises(CompileError, match=r"writing the build failed: Operation not permitted; nothing was replaced"):
        write_builds(out, {"a": build("new a"), "b": build("new b")})
    assert {t: tree(out / t) for t in ("a", "b")} == before
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]  # no staging folder left


def test_failed_swap_removes_a_new_target(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failing_rename(monkeypatch, staged("b"))
    with pytest.raises(CompileError, match="nothing was replaced"):
        write_builds(out, {"c": build("new c"), "b": build("new b")})
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]


def test_restore_that_fails_keeps_the_previous_build(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When even putting a back fails, the error says where its previous build is, and that folder is kept."""
    old_a, old_b = tree(out / "a"), tree(out / "b")
    failing_rename(monkeypatch, lambda src: staged("b")(src) or src.name == ".old-a")
    with pytest.raises(CompileError, match=r"a: could not be restored: Operation not permitted; the previous build is kept in") as info:
        write_builds(out, {"a": build("new a"), "b": build("new b")})
    kept = Path(str(info.value).rsplit("kept in ", 1)[1])
    assert tree(kept) == old_a and tree(out / "b") == old_b


def test_interrupt_during_swap_restores(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree(out)
    failing_rename(monkeypatch, staged("b"), KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        write_builds(out, {"a": build("new a"), "b": build("new b")})
    assert tree(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]


def test_immutable_folder_through_the_cli(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """The audit's case: chattr +i on the second target, then a recompile with another seed."""
    spec = write_spec()
    out = tmp_path / "out"
    compile_spec(spec, ["local", "slurm"], out)
    before = tree(out)
    write_spec(MINIMAL + "training:\n  seed: 3\n")
    if subprocess.run(["chattr", "+i", str(out / "slurm")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a file system that supports it")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ftc.cli", "compile", str(spec), "-t", "local", "-t", "slurm", "-o", str(out)],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(out / "slurm")], check=True)
    assert done.returncode == 1 and "nothing was replaced" in done.stderr and "Traceback" not in done.stderr
    assert tree(out) == before


# --- only ftc builds are replaced ---------------------------------------------------------------


def test_folder_that_is_not_a_build_is_refused(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "thesis.tex").write_text("years of work")
    with pytest.raises(CompileError, match=r"local: exists and is not an ftc build \(it has no ftc manifest.json\); refusing"):
        write_builds(tmp_path, {"slurm": build("s"), "local": build("l")})
    assert (tmp_path / "local" / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local"]  # nothing written, not even slurm


@pytest.mark.parametrize(
    "content",
    [None, b"{}", b"not json", b'{"generated_by": "make"}', b"[1]"],
    ids=["no-manifest", "empty-object", "not-json", "other-tool", "not-an-object"],
)
def test_what_counts_as_an_ftc_build(tmp_path: Path, content: bytes | None) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    if content is not None:
        (folder / "manifest.json").write_bytes(content)
    assert not is_ftc_build(folder)
    with pytest.raises(CompileError, match="not an ftc build"):
        write_builds(tmp_path, {"t": build("new")})
    (folder / "manifest.json").write_text(json.dumps({"generated_by": "ftc 9.9"}))
    assert is_ftc_build(folder)


def test_empty_folder_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "local").mkdir()
    (written,) = write_builds(tmp_path, {"local": build("l")})
    assert tree(written)["config.json"] == b"l"


def test_cli_refuses_to_clobber(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec()
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "thesis.tex").write_text("keep")
    done = subprocess.run(
        [sys.executable, "-m", "ftc.cli", "compile", str(spec), "-t", "local", "-o", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "not an ftc build" in done.stderr and "Traceback" not in done.stderr
    assert os.listdir(tmp_path / "local") == ["thesis.tex"]


# --- modes ----------------------------------------------------------------------------------------


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_modes_do_not_depend_on_the_umask(tmp_path: Path, umask_077: None) -> None:
    (folder,) = write_builds(tmp_path / "out", {"t": build("x", nested=True)})
    modes = {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.rglob("*")]}
    assert modes == {
        ".": 0o755,
        "environment": 0o755,
        "environment/conda.yaml": 0o644,
        "run.sh": 0o755,
        "config.json": 0o644,
        "manifest.json": 0o644,
    }


def test_azureml_environment_folder_under_umask_077(write_spec: Callable[..., Path], tmp_path: Path, umask_077: None) -> None:
    (folder,) = compile_spec(write_spec(), ["azureml"], tmp_path / "build")
    assert stat.S_IMODE((folder / "environment").stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "environment" / "conda.yaml").stat().st_mode) == 0o644


# --- what a user put in a target folder -------------------------------------------------------------


def test_recompile_keeps_what_a_user_put_in_a_target_folder(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """SLURM's job logs (sbatch run in build/slurm), a log folder, an empty one: kept, and the user is told."""
    spec, out = write_spec(), tmp_path / "build"
    compile_spec(spec, ["local", "slurm"], out)
    folder = out / "slurm"
    (folder / "logs").mkdir()
    (folder / "logs" / "job-124.err").write_text("err")
    (folder / "empty").mkdir()
    write_spec(MINIMAL + "training:\n  seed: 3\n")
    with (folder / "job-123.out").open("w") as log:  # the job is still running, writing its log
        log.write("epoch 1\n")
        log.flush()
        done = subprocess.run(
            [sys.executable, "-m", "ftc.cli", "compile", str(spec), "-t", "local", "-t", "slurm", "-o", str(out)],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        log.write("epoch 2\n")
    assert done.returncode == 0, done.stderr
    assert f"warning: {folder}: kept 3 path(s) that ftc did not write: empty/, job-123.out, logs/job-124.err\n" in done.stderr
    assert json.loads((folder / "ftc.resolved.json").read_text())["training"]["seed"] == 3  # the new build
    assert (folder / "job-123.out").read_text() == "epoch 1\nepoch 2\n"  # the same file: what comes later lands too
    assert (folder / "logs" / "job-124.err").read_text() == "err" and (folder / "empty").is_dir()
    assert "job-123.out" not in json.loads((folder / "manifest.json").read_text())["files"]
    assert sorted(p.name for p in out.iterdir()) == ["local", "slurm"]


def test_a_user_file_the_new_build_would_overwrite_is_refused(out: Path) -> None:
    (out / "a" / "notes.txt").write_text("mine")
    (out / "a" / "environment").write_text("a file where the new build puts a folder")
    with pytest.raises(CompileError, match=r"a: the new build writes environment, notes.txt, which the earlier build did not"):
        write_builds(out, {"a": [*build("new a", nested=True), Artifact("notes.txt", b"ftc's")]})
    assert (out / "a" / "notes.txt").read_text() == "mine" and tree(out / "a")["config.json"] == b"old a"


def test_kept_files_are_copied_where_hard_links_fail(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (out / "a" / "job-1.out").write_text("log")

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    warnings: list[object] = []
    write_builds(out, {"a": build("new a")}, warnings.append)
    assert (out / "a" / "job-1.out").read_text() == "log" and tree(out / "a")["config.json"] == b"new a"
    assert [str(w) for w in warnings] == [f"{out / 'a'}: kept 1 path(s) that ftc did not write: job-1.out"]
