"""Writes builds all at once: into a temporary folder beside the output, then swapped into place.

Each target folder is replaced whole, and only if it is an earlier ftc build (it holds ftc's
manifest.json) or empty. When any swap fails, the targets already swapped get their previous
build back, so a compile either replaces every target or none.

One compile at a time writes a build folder: it holds an flock on `<out>/.ftc-lock` (removed when
done); another waits up to LOCK_TIMEOUT_S, then fails with a clear error. Holding the lock, a
compile removes the `.ftc-staging-*` folders that compiles which died left behind, except one that
holds a previous build that could not be restored (`.old-<target>`, named in that compile's error):
it is kept and named in a warning.

What a user put in a target folder (files its manifest does not list, such as SLURM's job logs,
and empty folders) is kept: hard-linked into the new build, so a log a running job still writes
keeps growing there, and named in a warning. A compile whose new build writes one of those paths
itself is refused, naming them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ftc.errors import CompileError, Location, Problem

MANIFEST_NAME = "manifest.json"
MANIFEST_MAX_BYTES = 1 << 20
DIR_MODE = 0o755
LOCK_NAME = ".ftc-lock"
LOCK_TIMEOUT_S = 60.0
LOCK_POLL_S = 0.05
STAGING_PREFIX = ".ftc-staging-"
OLD_PREFIX = ".old-"
NO_LOCKS = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)  # a file system without flock (Lustre mounted noflock)
SHOWN = 10  # paths named in one message

Warn = Callable[[Problem], None]


@dataclass(frozen=True)
class Artifact:
    """One generated file: its path inside the target folder, its bytes and its mode."""

    path: str
    content: bytes
    mode: int = 0o644

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


def manifest(artifacts: list[Artifact], header: dict[str, str]) -> Artifact:
    """The manifest of a target folder: who generated it and the digest of every file."""
    body = {**header, "files": {a.path: a.sha256 for a in sorted(artifacts, key=lambda a: a.path)}}
    return Artifact(MANIFEST_NAME, (json.dumps(body, indent=2) + "\n").encode())


def check_output_dir(out_dir: Path) -> None:
    """Refuse an output path that is a file, or whose nearest existing folder is not writable."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CompileError(f"{out_dir}: the output path is a file, not a folder")
    existing = out_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CompileError(f"{existing}: is a file, so {out_dir} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CompileError(f"{existing}: is not writable, so nothing can be written to {out_dir}")


def is_ftc_build(folder: Path) -> bool:
    """Whether `folder` holds the manifest.json that ftc writes into every target folder."""
    path = folder / MANIFEST_NAME
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MANIFEST_MAX_BYTES:
            return False
        body = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(body, dict) and str(body.get("generated_by", "")).startswith("ftc ")


def check_replaceable(final: Path) -> None:
    """Refuse to replace anything at `final` but a folder holding an earlier ftc build, or an empty one."""
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise CompileError(f"{final}: exists and is not a folder; refusing to replace it")
    try:
        empty = not final.exists() or not any(final.iterdir())
    except OSError as exc:
        raise CompileError(f"{final}: cannot be read, so it cannot be replaced: {exc.strerror or exc}") from None
    if not empty and not is_ftc_build(final):
        raise CompileError(
            f"{final}: exists and is not an ftc build (it has no ftc {MANIFEST_NAME}); refusing to replace it: "
            "move it away or choose another --output"
        )


def stage(folder: Path, artifacts: list[Artifact]) -> None:
    """Write `artifacts` below `folder`: folders 0755, files their own mode, whatever the umask."""
    folders = {folder}
    for artifact in artifacts:
        path = folder / artifact.path
        path.parent.mkdir(parents=True, exist_ok=True)
        folders.update(p for p in path.parents if p.is_relative_to(folder))
        path.write_bytes(artifact.content)
        path.chmod(artifact.mode)
    for path in folders:
        path.chmod(DIR_MODE)


@dataclass
class _Moved:
    """A target folder being swapped: where its previous build waits, and whether the new one is in."""

    final: Path
    old: Path | None
    new_in: bool = False


class _Swap:
    """Moves staged target folders into place, keeping each previous build until all are in."""

    def __init__(self, staging: Path, out_dir: Path) -> None:
        self.staging = staging
        self.out_dir = out_dir
        self.moved: list[_Moved] = []

    def put(self, target: str) -> Path:
        final = self.out_dir / target
        moved = _Moved(final, self.staging / f"{OLD_PREFIX}{target}" if final.exists() else None)
        if moved.old is not None:
            os.rename(final, moved.old)
        self.moved.append(moved)
        os.rename(self.staging / target, final)
        moved.new_in = True
        return final

    def undo(self) -> list[str]:
        """Put every previous build back; what could not be restored, as messages."""
        failures = []
        for m in reversed(self.moved):
            try:
                if m.new_in:
                    os.rename(m.final, self.staging / f".new-{m.final.name}")
                if m.old is not None:
                    os.rename(m.old, m.final)
            except OSError as exc:
                kept = f"; the previous build is kept in {m.old}" if m.old is not None and m.old.exists() else ""
                failures.append(f"{m.final}: could not be restored: {exc.strerror or exc}{kept}")
        return failures


def _warning(where: Path, message: str) -> Problem:
    return Problem(Location(str(where)), "", message)


def _named(paths: list[str]) -> str:
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more


# --- one compile at a time ------------------------------------------------------------------------


@contextlib.contextmanager
def build_lock(out_dir: Path, warn: Warn) -> Iterator[None]:
    """Hold the lock of the build folder `out_dir` (which exists); its lock file is removed after."""
    path = out_dir / LOCK_NAME
    fd: int | None = None
    try:
        fd = _acquire(path, time.monotonic() + LOCK_TIMEOUT_S)
    except OSError as exc:
        if exc.errno not in NO_LOCKS:
            raise
        path.unlink(missing_ok=True)
        warn(_warning(out_dir, f"cannot be locked ({exc.strerror}): compiles into it at the same time can mix their builds"))
    try:
        yield
    finally:
        if fd is not None:
            path.unlink(missing_ok=True)  # while still held: a compile waiting on this file then opens a new one
            os.close(fd)


def _acquire(path: Path, deadline: float) -> int:
    """An open descriptor of the lock file `path`, locked; retried when another compile removed the file meanwhile."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            _flock(fd, path, deadline)
            if _is_current(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _flock(fd: int, path: Path, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise CompileError(
                    f"{path.parent}: another ftc compile is writing this folder (waited {LOCK_TIMEOUT_S:g} s); "
                    f"compile again when it is done (it holds {path})"
                ) from None
            time.sleep(LOCK_POLL_S)


def _is_current(fd: int, path: Path) -> bool:
    """Whether the locked descriptor `fd` is still the file at `path` (the compile before may have removed it)."""
    try:
        current = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)


def clean_stale_staging(out_dir: Path, warn: Warn) -> None:
    """Remove the staging folders compiles that died left in `out_dir` (the lock is held: none is in use).

    A staging folder that holds a previous build that could not be restored is kept, and named.
    """
    for folder in sorted(out_dir.iterdir()):
        if not folder.name.startswith(STAGING_PREFIX) or folder.is_symlink() or not folder.is_dir():
            continue
        old = sorted(p.name for p in folder.iterdir() if p.name.startswith(OLD_PREFIX))
        if not old:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        message = f"holds a previous build that could not be restored ({', '.join(old)}); move what you need out of it, then delete it"
        warn(_warning(folder, message))


# --- what a user put in a target folder -----------------------------------------------------------


def user_paths(folder: Path) -> list[str]:
    """What a user put in the earlier build `folder`: unlisted files, and empty folders (ending in /)."""
    if not is_ftc_build(folder):
        return []  # an empty folder, or none
    files = json.loads((folder / MANIFEST_NAME).read_bytes()).get("files")
    listed = {MANIFEST_NAME, *(files if isinstance(files, dict) else {})}
    return sorted(_unlisted(folder, listed))


def _unlisted(root: Path, listed: set[str], under: str = "") -> Iterator[str]:
    with os.scandir(root / under) as entries:
        children = [(f"{under}{e.name}", e.is_dir(follow_symlinks=False)) for e in entries]
    if under and not children:
        yield under  # e.g. `mkdir logs` for `sbatch --output logs/%j.out`
    for path, is_dir in children:
        if is_dir:
            yield from _unlisted(root, listed, f"{path}/")
        elif path not in listed:
            yield path


def in_the_way(path: str, new_files: set[str]) -> bool:
    """Whether a user's `path` (a folder if it ends in /) is or is below a new file, or is a file where a new folder goes."""
    bare = PurePosixPath(path.rstrip("/"))
    new_folders = {parent for f in new_files for parent in PurePosixPath(f).parents}
    return (
        str(bare) in new_files
        or (not path.endswith("/") and bare in new_folders)
        or any(str(parent) in new_files for parent in bare.parents)
    )


def carry_user_paths(old: Path, new: Path, artifacts: list[Artifact]) -> list[str]:
    """Put what a user put in the earlier build `old` into the staged build `new`; those paths.

    Files are hard-linked (copied where the file system has no hard links); a path the new build
    writes itself is refused, naming it.
    """
    paths = user_paths(old)
    new_files = {a.path for a in artifacts}
    clashes = [p for p in paths if in_the_way(p, new_files)]
    if clashes:
        raise CompileError(
            f"{old}: the new build writes {_named(clashes)}, which the earlier build did not: files put there by hand? "
            "Move them out of the folder, then compile again"
        )
    for path in paths:
        _carry(old / path, new / path)
    return paths


def _carry(src: Path, dst: Path) -> None:
    if src.is_dir() and not src.is_symlink():
        dst.mkdir(parents=True, exist_ok=True)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


# --- writing --------------------------------------------------------------------------------------


def write_builds(out_dir: Path, builds: dict[str, list[Artifact]], on_warning: Warn | None = None) -> list[Path]:
    """Write each target's artifacts to `out_dir/<target>/`, replacing an earlier build whole.

    Everything is written to a temporary folder inside `out_dir` first; only when all files are
    written are the target folders swapped in, and a failed swap restores those already swapped,
    so a failure never leaves a half-written or mixed build. The build folder is locked meanwhile,
    and what a user put in a target folder is kept: see the module's docstring. Warnings (kept
    paths, a kept staging folder) go to `on_warning`.
    """
    warn = on_warning or (lambda problem: None)
    check_output_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CompileError(f"{out_dir}: cannot create the output folder: {exc.strerror or exc}") from None
    try:
        with build_lock(out_dir, warn):
            for target in builds:
                check_replaceable(out_dir / target)
            clean_stale_staging(out_dir, warn)
            return _write_locked(out_dir, builds, warn)
    except OSError as exc:
        raise CompileError(f"{out_dir}: writing the build failed: {exc.strerror or exc}; nothing was replaced") from None


def _write_locked(out_dir: Path, builds: dict[str, list[Artifact]], warn: Warn) -> list[Path]:
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    swap = _Swap(staging, out_dir)
    keep_staging = False
    try:
        kept: dict[str, list[str]] = {}
        for target, artifacts in builds.items():
            stage(staging / target, artifacts)
            kept[target] = carry_user_paths(out_dir / target, staging / target, artifacts)
        written = [swap.put(target) for target in builds]
    except BaseException as exc:
        failures = swap.undo()
        keep_staging = bool(failures)  # it holds a previous build that could not be put back
        if not isinstance(exc, OSError):
            raise
        reason = "; ".join(failures) if failures else "nothing was replaced"
        raise CompileError(f"{out_dir}: writing the build failed: {exc.strerror or exc}; {reason}") from None
    finally:
        if not keep_staging:
            shutil.rmtree(staging, ignore_errors=True)
    for target, paths in kept.items():
        if paths:
            warn(_warning(out_dir / target, f"kept {len(paths)} path(s) that ftc did not write: {_named(paths)}"))
    return written
