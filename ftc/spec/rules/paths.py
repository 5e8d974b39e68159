"""FTC120: relative paths stay inside the spec's folder, through `..` or through symlinks; the spec's location keys.

Every key here names a location: a local path, or a URI (`s3://...`, see ftc.spec.uris) that the path rules skip
and the storage rules (FTC160-FTC162) check.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftc.spec.rules.registry import KeyPath, rule
from ftc.spec.uris import AZUREML_SCHEME, is_uri

if TYPE_CHECKING:
    from ftc.spec.resolved import Resolved


# Paths relative to the spec's folder (model.gguf_file: to the model folder). Each target adds its own: the
# `path_options` of its options section (a `targets.<name>` option such as targets.slurm.venv).
_PATH_KEYS: tuple[KeyPath, ...] = (
    ("model", "model_selector_output"),
    ("model", "tokenizer_name"),
    ("model", "gguf_file"),
    ("data", "preprocess_output"),
    ("data", "train_file_path"),
    ("data", "validation_file_path"),
    ("data", "test_file_path"),
    ("lora", "from_peft_checkpoint"),
    ("deepspeed", "deepspeed"),
    ("checkpointing", "output_dir"),
    ("checkpointing", "resume_from_checkpoint"),  # when a folder (or a URI) rather than true
    ("fsdp", "dist_checkpoint_root_folder"),
    ("tracking", "profiler_dir"),
)
_MAX_SYMLINKS = 40


@rule("FTC120", "error", "path outside the spec's folder")
def _path_outside(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Relative paths must stay inside the spec's folder (model.gguf_file inside the model folder), through `..`
    or through relative symlinks; a symlink to an absolute path counts as that absolute path, which is allowed.
    Allow one with lint.ignore and a reason."""
    spec_folder = r.doc.base_dir
    model_folder = spec_folder / r.spec.model.model_selector_output
    for key, value in location_values(r):
        gguf = key == ("model", "gguf_file")
        if is_relative_path(value) and _climbs_out(model_folder if gguf else spec_folder, value):
            where = "the model folder" if gguf else "the spec's folder"
            yield key, f"{value!r} leads outside {where}; move it, use an absolute path, or allow it in lint.ignore"


def _path_keys(r: Resolved) -> Iterator[KeyPath]:
    """The spec's path keys, then each target's `path_options` (declared on its options section), in target order."""
    yield from _PATH_KEYS
    targets = r.spec.targets  # type: ignore[attr-defined]
    for name in type(targets).model_fields:
        for option in getattr(getattr(targets, name), "path_options", ()):
            yield ("targets", name, option)


def location_values(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """(key, value) of every location the spec gives (a path or a URI), in key order."""
    for key in _path_keys(r):
        value: Any = r.spec
        for name in key:
            value = getattr(value, str(name), None)
        if isinstance(value, str):
            yield key, value


def is_azureml_asset(value: str) -> bool:
    """`azureml://...` or Azure ML's short form `azureml:<name>:<version>`: an asset only Azure ML jobs can read."""
    return value.lower().startswith(f"{AZUREML_SCHEME}:")


def is_relative_path(value: str) -> bool:
    """A local path relative to the spec's folder: not a URI, an Azure ML asset, `~/...` or an absolute path."""
    if not value or is_uri(value) or is_azureml_asset(value):
        return False
    return not value.startswith("~") and not os.path.isabs(value)


def _climbs_out(folder: Path, value: str) -> bool:
    """Whether relative `value` leads out of `folder` through `..`, or through symlinks with relative targets.

    A symlink to an absolute path stands for that path, as an absolute path in the spec would.
    """
    pending, inside, hops = list(Path(value).parts), [], 0
    while pending:
        part = pending.pop(0)
        if part == os.pardir:
            if not inside:
                return True
            inside.pop()
        elif part != os.curdir:
            inside.append(part)
            target = _link_target(folder.joinpath(*inside))
            if target is None:
                continue
            if os.path.isabs(target):
                return False
            hops += 1
            if hops > _MAX_SYMLINKS:
                return True  # a symlink loop never arrives inside
            inside.pop()
            pending = [*Path(target).parts, *pending]
    return False


def _link_target(path: Path) -> str | None:
    """The target of symlink `path`; None when it is no symlink or cannot be read."""
    try:
        return os.readlink(path) if path.is_symlink() else None
    except (OSError, ValueError):
        return None
