"""A full disk while writing outputs: one line saying where, how much, the last good checkpoint and how to resume.

A write that runs out of space fails in many shapes: `OSError` ENOSPC or EDQUOT, safetensors'
`SafetensorError: ... No space left on device (os error 28)`, SQLite's "database or disk is full",
and torch.save's `RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos ...`,
which carries no errno at all. `is_disk_full` recognises the first three by errno or text anywhere
in the exception chain, and torch's by its text when the folder written to has (almost) no free
space left: less than 1% of the file system and less than 64 MiB.

`writing(...)` wraps each phase that writes (the checkpoints of `trainer.train`, the final model,
metrics.json and training_curves.png, the MLflow model) and turns such a failure into `DiskFull`
(exit 1), after removing what the failed write left half-done: the newest checkpoint when it is
incomplete (resume would skip it anyway) and, for the final model, the files the save changed.
That frees the space the log line and the MLflow run's FAILED status need when they live on the
same disk (the SQLite store is in the output folder by default).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from ftc.runtime.errors import DiskFull, resume_hint

log = logging.getLogger("ftc.runtime")

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_NO_SPACE_TEXT = re.compile(r"no space left on device|disk is full|disk quota exceeded|os error 28\b", re.IGNORECASE)
_WRITE_FAILED = re.compile(r"unexpected pos \d+|iostream error|file write failed|failed writing", re.IGNORECASE)
LOW_FREE_BYTES = 64 * 2**20


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and its causes and contexts, each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def space(folder: Path) -> tuple[int, int] | None:
    """(free, total) bytes of the file system `folder` is (or will be) on: its nearest existing parent's."""
    for path in (folder, *folder.parents):
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            continue
        return usage.free, usage.total
    return None


def low_on_space(folder: Path) -> bool:
    """Whether the file system of `folder` is (almost) full."""
    found = space(folder)
    return found is not None and found[0] < min(LOW_FREE_BYTES, max(1, found[1] // 100))


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether `exc`, raised while writing into `folder`, means that there was no space left."""
    chain = list(_chain(exc))
    if any(isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS for e in chain):
        return True
    if any(_NO_SPACE_TEXT.search(str(e)) for e in chain):
        return True
    return any(_WRITE_FAILED.search(str(e)) for e in chain) and low_on_space(folder)


def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """The plain files at the top of `folder`: name -> (size, mtime in ns)."""
    try:
        stats = {p.name: p.stat() for p in folder.iterdir() if p.is_file()}
    except OSError:
        return {}
    return {name: (st.st_size, st.st_mtime_ns) for name, st in stats.items()}


def _remove_broken_checkpoint(checkpoints: Path) -> str | None:
    """Remove the newest checkpoint of `checkpoints` when it is incomplete; returns its name."""
    from ftc.runtime.callbacks import checkpoint_problem, checkpoints as found

    listed = found(checkpoints)
    if not listed or checkpoint_problem(listed[-1][1]) is None:
        return None
    path = listed[-1][1]
    shutil.rmtree(path, ignore_errors=True)
    return path.name


def _remove_changed(folder: Path, before: dict[str, tuple[int, int]]) -> list[str]:
    """Remove the files at the top of `folder` that are new or changed since `before`; returns their names."""
    changed = sorted(name for name, stamp in _files(folder).items() if before.get(name) != stamp)
    for name in changed:
        (folder / name).unlink(missing_ok=True)
    return changed


@contextlib.contextmanager
def writing(what: str, folder: Path, out: Path | str, checkpoints: Path, *, final_model: bool = False) -> Iterator[None]:
    """Turn a full disk while writing `what` into `folder` into one `DiskFull` line (see the module docstring).

    `out` is the run's output folder (for the resume command), `checkpoints` the Trainer's output_dir;
    with `final_model` the files the failed save changed at the top of `folder` are removed.
    """
    before = _files(folder) if final_model else {}
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc, folder):
            raise
        free = space(folder)
        broken = _remove_broken_checkpoint(checkpoints)
        removed = _remove_changed(folder, before) if final_model else []
        raise DiskFull(_message(what, folder, out, checkpoints, free, broken, removed)) from None


def _message(
    what: str, folder: Path, out: Path | str, checkpoints: Path, free: tuple[int, int] | None,
    broken: str | None, removed: list[str],
) -> str:
    from ftc.runtime.callbacks import last_good_checkpoint

    parts = [f"the disk is full: no space left in {folder}"]
    if free is not None:
        parts[0] += f" ({size_text(free[0])} free of {size_text(free[1])})"
    parts[0] += f" while writing {broken or what}"
    good = last_good_checkpoint(checkpoints)
    if broken and good is not None:
        parts[0] += f", which needs about {size_text(_tree_size(good))} (the size of {good.name})"
    if broken:
        parts.append(f"the half-written {broken} was removed")
    if removed:
        parts.append(f"its half-written files ({', '.join(removed)}) were removed")
    if good is None:
        parts.append("there is no checkpoint to resume from: free some space and run the same command again")
    else:
        parts.append(f"the last good checkpoint is {good.name} in {checkpoints}")
        parts.append(f"free some space; then {resume_hint(out)}")
    return "; ".join(parts)
