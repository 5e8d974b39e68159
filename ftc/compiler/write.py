"""Writes builds all at once: into a temporary folder beside the output, then swapped into place.

Each target folder is replaced whole, and only if it is an earlier ftc build (it holds ftc's
manifest.json) or empty. When any swap fails, the targets already swapped get their previous
build back, so a compile either replaces every target or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ftc.errors import CompileError

MANIFEST_NAME = "manifest.json"
MANIFEST_MAX_BYTES = 1 << 20
DIR_MODE = 0o755


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
        moved = _Moved(final, self.staging / f".old-{target}" if final.exists() else None)
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


def write_builds(out_dir: Path, builds: dict[str, list[Artifact]]) -> list[Path]:
    """Write each target's artifacts to `out_dir/<target>/`, replacing an earlier build whole.

    Everything is written to a temporary folder inside `out_dir` first; only when all files are
    written are the target folders swapped in, and a failed swap restores those already swapped,
    so a failure never leaves a half-written or mixed build.
    """
    check_output_dir(out_dir)
    for target in builds:
        check_replaceable(out_dir / target)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ftc-staging-", dir=out_dir))
    except OSError as exc:
        raise CompileError(f"{out_dir}: cannot create the output folder: {exc.strerror or exc}") from None
    swap = _Swap(staging, out_dir)
    keep_staging = False
    try:
        for target, artifacts in builds.items():
            stage(staging / target, artifacts)
        return [swap.put(target) for target in builds]
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
