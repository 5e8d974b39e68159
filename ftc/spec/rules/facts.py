"""What the spec rules read besides the spec's values: which keys were given, the model family, the data files."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ftc.spec.peek import find_file, is_file, local_path, model_family, peek_data

if TYPE_CHECKING:
    from ftc.spec.model import SpecBase
    from ftc.spec.resolved import Resolved


def given(resolved: Resolved, key: str) -> bool:
    """Whether the spec (or an override) set `key`, rather than a default or a derived value."""
    source = resolved.sources.get(key, "default")
    return not (source.startswith("default") or source.startswith("derived"))


def settings_without_switch(r: Resolved, section: str, switch: str) -> Iterator[str]:
    """The names of the `section` settings the spec gives while its `switch` (e.g. lora.apply_lora) is off."""
    model = getattr(r.spec, section)
    if getattr(model, switch):
        return
    for name in type(model).model_fields:
        if name != switch and given(r, f"{section}.{name}"):
            yield name


def saves_periodically(spec: SpecBase) -> bool:
    """Whether the run writes checkpoints while it trains: it saves when it evaluates (evaluation_strategy no
    means never), or on an Anyscale schedule (checkpoint_every_n_epochs, max_num_checkpoints)."""
    ck = spec.checkpointing
    return spec.evaluation.evaluation_strategy != "no" or bool(ck.checkpoint_every_n_epochs or ck.max_num_checkpoints)


def family_of(r: Resolved) -> str | None:
    """The model family of a local model folder (its config.json model_type); None when unknown."""
    return model_family(r.doc.base_dir, r.spec.model.model_selector_output)


def data_files(r: Resolved) -> list[tuple[str, Path]]:
    """(role, path) of each data file the spec names that is a local file: train, validation, test."""
    d = r.spec.data
    found = []
    for role, value in (("train", d.train_file_path), ("validation", d.validation_file_path), ("test", d.test_file_path)):
        path = local_path(r.doc.base_dir, value)
        if path is None and d.preprocess_output:
            folder = local_path(r.doc.base_dir, d.preprocess_output)
            path = find_file(folder, role) if folder is not None else None
        if path is not None and is_file(path):
            found.append((role, path))
    return found


def most_train_steps(r: Resolved) -> tuple[int, int, str] | None:
    """(at most how many optimizer steps training makes, training rows, file name) when the whole training file
    was read; None otherwise, and for question answering, whose long contexts make several rows each."""
    train = dict(data_files(r)).get("train")
    if train is None or r.spec.task == "question_answering":
        return None
    peek = peek_data(train)
    if peek is None or not peek.rows or not peek.complete:
        return None
    tr = r.spec.training
    batches = math.ceil(len(peek.rows) / (tr.per_device_train_batch_size * r.derived["world_size"]))
    per_epoch = max(1, math.ceil(batches / tr.gradient_accumulation_steps))
    epochs = tr.num_train_epochs
    if r.derived.get("epochs_from_min_update_steps") and tr.min_update_steps:
        epochs = max(1, math.ceil(tr.min_update_steps / per_epoch))
    return per_epoch * epochs, len(peek.rows), train.name
