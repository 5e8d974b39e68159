"""Writes builds all at once: into a temporary folder beside the output, then moved into place."""

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


def write_builds(out_dir: Path, builds: dict[str, list[Artifact]]) -> list[Path]:
    """Write each target's artifacts to `out_dir/<target>/`, replacing an earlier build whole.

    Everything is written to a temporary folder inside `out_dir` first; only when all files are
    written are the target folders swapped in, so a failure never leaves a half-written build.
    """
    check_output_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".ftc-staging-", dir=out_dir))
    except OSError as exc:
        raise CompileError(f"{out_dir}: cannot create the output folder: {exc.strerror or exc}") from None
    try:
        for target, artifacts in builds.items():
            for artifact in artifacts:
                path = staging / target / artifact.path
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(artifact.content)
                path.chmod(artifact.mode)
            (staging / target).chmod(0o755)
        for target in builds:
            final = out_dir / target
            if final.is_symlink() or (final.exists() and not final.is_dir()):
                raise CompileError(f"{final}: exists and is not a folder; refusing to replace it")
        written = []
        for target in builds:
            final = out_dir / target
            old = staging / f".old-{target}"
            if final.exists():
                final.rename(old)
            (staging / target).rename(final)
            written.append(final)
        return written
    except OSError as exc:
        raise CompileError(f"{out_dir}: writing the build failed: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
