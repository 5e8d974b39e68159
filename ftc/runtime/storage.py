"""Remote data, models and outputs through fsspec: s3://, gs://, abfs:// / az://, hf:// (see ftc.spec.uris).

Credentials come only from the environment of the process (the variables the spec names in env.secrets:
AWS_ACCESS_KEY_ID, AZURE_STORAGE_CONNECTION_STRING, ...), which each filesystem package reads itself;
nothing here writes them anywhere.

Remote models are read from a complete local copy made once per node (`cached_copy`, under
$FTC_CACHE_DIR or ~/.cache/ftc); a remote output_dir is staged in a local folder and uploaded
(`upload_folder`, a checkpoint's `.ftc_complete` marker last), and resumed from by `download_folder`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ftc.runtime.errors import RuntimeUserError
from ftc.spec.uris import AZUREML_SCHEME, SCHEMES, missing_package, scheme_of, unknown_scheme_message

log = logging.getLogger("ftc.runtime")


def check_usable(uri: str, what: str) -> None:
    """RuntimeUserError when `uri` cannot be reached from here: an unknown scheme, an azureml:// asset outside
    Azure ML, or a scheme whose fsspec package is not installed (naming the ftc extra that installs it)."""
    if problem := unknown_scheme_message(uri):
        raise RuntimeUserError(f"{what} {problem}")
    if scheme_of(uri) == AZUREML_SCHEME:
        raise RuntimeUserError(
            f"{what} {uri!r} is an Azure ML asset: only an Azure ML job can read it (compile with --target azureml, "
            "which passes it as an input Azure ML mounts); elsewhere give an s3://, gs://, abfs:// URI or a path"
        )
    if scheme := missing_package(uri):
        raise RuntimeUserError(
            f"{what} {uri!r} needs the {scheme.package} package to read {scheme.name}:// locations: "
            f"pip install 'ftc[{scheme.extra}]'"
        )


def storage_options(uri: str) -> dict[str, Any]:
    """fsspec keyword arguments for the filesystem of `uri` (for datasets' `storage_options`); each package
    reads its credentials and endpoint from the environment itself, so none are needed today."""
    assert scheme_of(uri) in SCHEMES, uri
    return {}


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem of `uri` and the path inside it, after `check_usable`."""
    import fsspec

    check_usable(uri, "location")
    return fsspec.core.url_to_fs(uri, **storage_options(uri))  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- local copies of remote folders

CACHE_ENV = "FTC_CACHE_DIR"  # where remote models are downloaded and remote outputs staged
COMPLETE_MARKER = ".ftc_complete"  # written into a remote checkpoint after all its files (see upload_folder)


def cache_root() -> Path:
    """$FTC_CACHE_DIR, else ~/.cache/ftc: downloaded models (`remote/`) and staged outputs (`staging/`)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ftc")


def local_folder(uri: str, kind: str) -> Path:
    """The node-local folder that stands for `uri` under cache_root()/`kind`: keyed by the URI, its last part
    kept in the name for people reading the folder."""
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", uri.rstrip("/").rsplit("/", 1)[-1])[:40]
    return cache_root() / kind / f"{tail}-{digest}"


@contextlib.contextmanager
def node_lock(path: Path) -> Iterator[None]:
    """An exclusive file lock on `path`: one process of the node at a time (the others wait)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_copy(uri: str, what: str) -> Path:
    """A complete local copy of the remote folder (or file) `uri`, downloaded once per node.

    The first process to take the node's lock downloads into a temporary folder and renames it into
    place; the others wait on the lock and then find it there, so no process reads a partial copy.
    The copy is keyed by the URI: a changed remote folder needs a new URI (or FTC_CACHE_DIR emptied)."""
    dest = local_folder(uri, "remote")
    with node_lock(dest.with_name(dest.name + ".lock")):
        if dest.exists():
            return dest
        check_usable(uri, what)
        fs, path = filesystem(uri)
        if not fs.exists(path):
            raise RuntimeUserError(f"{what} {uri} not found")
        partial = dest.with_name(f"{dest.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _download(fs, path, partial)
            os.replace(partial, dest)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    log.info("%s %s downloaded to %s", what, uri, dest)
    return dest


def _download(fs: Any, path: str, dest: Path) -> None:
    """Copy the remote file or folder `path` to `dest` (a folder keeps its layout)."""
    if fs.isdir(path):
        root = path.rstrip("/")
        dest.mkdir(parents=True)
        for remote in fs.find(root):
            local = dest / remote[len(root) :].lstrip("/")
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(local))
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fs.get(path, str(dest))


def download_folder(uri: str, dest: Path) -> None:
    """Replace the local folder `dest` by a copy of the remote folder `uri` (a temporary folder renamed into place)."""
    fs, path = filesystem(uri)
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _download(fs, path, partial)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def upload_folder(
    folder: Path, uri: str, marker: bool = False, skip: Callable[[Path], bool] | None = None
) -> list[Path]:
    """Copy the local folder `folder` to the remote folder `uri` (its files replace those there), less the
    files `skip` says (given their path relative to `folder`); with `marker`, write COMPLETE_MARKER last,
    so a reader can tell a complete upload from a cut one. Returns the files uploaded."""
    fs, path = filesystem(uri)
    path = path.rstrip("/")
    if marker and fs.exists(f"{path}/{COMPLETE_MARKER}"):  # incomplete while its files are replaced
        fs.rm(f"{path}/{COMPLETE_MARKER}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not (skip and skip(p.relative_to(folder))))
    for file in files:
        fs.put_file(str(file), f"{path}/{file.relative_to(folder).as_posix()}")
    if marker:
        fs.pipe_file(f"{path}/{COMPLETE_MARKER}", b"complete\n")
    return files


def remove(uri: str) -> None:
    """Delete the remote folder `uri` and everything in it (nothing when it is not there)."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def complete_folders(uri: str) -> list[str]:
    """The names of the folders directly under the remote folder `uri` that hold COMPLETE_MARKER."""
    fs, path = filesystem(uri)
    fs.invalidate_cache()
    if not fs.exists(path):
        return []
    names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(path, detail=False)]
    return [name for name in names if fs.exists(f"{path.rstrip('/')}/{name}/{COMPLETE_MARKER}")]
