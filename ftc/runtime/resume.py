"""Resume: which checkpoint a run continues from, and whether it was trained with this run's config.

Rank 0 writes `ftc_run_identity.json` into every checkpoint folder the Trainer saves
(`RecordRunIdentity`): the sha256 of the resolved values that change what training produces, and
those values, so that a mismatch can be explained. They are the task; the model, data, lora,
training, optimizer, precision, deepspeed and fsdp sections (less `NOT_RESULT`: where files go, how
fast data loads, memory-only switches, what only the final save or the test split use);
evaluation.metric_for_best_model (which checkpoint becomes the model); the number of processes (the
global batch); and whether the epochs come from min_update_steps. Not in it: output_dir, logging and
tracking, evaluation and save cadence, early stopping, resources other than the process count, env,
targets, lint, name, and the resume settings themselves. Values shaped like secrets are masked
before they are hashed or written. A value only one side records (an ftc that knows other
parameters) is not compared.

`checkpoint_to_resume` picks the checkpoint (the newest complete one of the output folder, or the
folder given as resume_from_checkpoint) and refuses, in one line naming the values that differ, a
checkpoint trained with other values, unless checkpointing.resume_ignore_config_change is true (then
it warns with the same list). A checkpoint at a step past max_steps is always refused, and one at
max_steps too unless it was trained with this run's values (a run that only has its outputs left to
write, e.g. after a preemption at the last step): resuming it would train nothing and return
another run's model as this run's. A checkpoint without the file (written by an older ftc) is
resumed with a warning; one whose file cannot be read is refused unless forced.

A remote output_dir (s3://...) is the truth: `fetch_remote_checkpoint` makes the node's staging folder
hold the newest checkpoint uploaded completely there (`.ftc_complete`, written after its files), and
no checkpoint that is not, before the choice above is made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ftc.contract import MODEL_FOLDER
from ftc.runtime import preemption, storage
from ftc.runtime.callbacks import (
    CHECKPOINT,
    IDENTITY_FILE,
    TRAINER_STATE,
    checkpoint_problem,
    checkpoints,
    last_good_checkpoint,
)
from ftc.runtime.config import RunConfig
from ftc.runtime.errors import RuntimeUserError
from ftc.spec.keys import leaf_index
from ftc.spec.secrets import mask_secrets

log = logging.getLogger("ftc.runtime")

FORCE_FLAG = "resume_ignore_config_change"
HOW_TO_FORCE = f"set checkpointing.{FORCE_FLAG}: true (--{FORCE_FLAG} true) to resume it anyway"
RESULT_SECTIONS = ("model", "data", "lora", "training", "optimizer", "precision", "deepspeed", "fsdp")
NOT_RESULT = {
    ("data", "preprocess_output"),  # where preprocessed data is written
    ("data", "preprocess_batch_size"),
    ("data", "test_file_path"),  # evaluated after training only
    ("training", "dataloader_num_workers"),
    ("lora", "merge_lora_weights"),  # how the final model is saved
    ("fsdp", "dist_checkpoint_root_folder"),
    ("fsdp", "dist_checkpoint_folder"),
    # memory only: the same updates
    ("precision", "gradient_checkpointing"),
    ("fsdp", "fsdp_activation_checkpointing"),
    ("fsdp", "fsdp_cpu_offload"),
    ("fsdp", "low_cpu_fsdp"),
    ("deepspeed", "offload_optimizer"),
    ("deepspeed", "offload_param"),
}
SHOWN_DIFFERENCES = 8  # values named in a message; the file lists them all


# --------------------------------------------------------------------------- the identity


def identity_values(cfg: RunConfig, world_size: int) -> dict[str, Any]:
    """The resolved values that change what training produces, by dotted name (secrets masked)."""
    spec = cfg.spec.model_dump(mode="json")
    values: dict[str, Any] = {"task": cfg.task}
    for section in RESULT_SECTIONS:
        for name, value in spec[section].items():
            if (section, name) not in NOT_RESULT:
                values[f"{section}.{name}"] = value
    values["evaluation.metric_for_best_model"] = spec["evaluation"]["metric_for_best_model"]
    values["world_size"] = max(1, world_size)
    values["epochs_from_min_update_steps"] = bool(cfg.derived.get("epochs_from_min_update_steps"))
    return {name: _masked(value) for name, value in values.items()}


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


def run_identity(cfg: RunConfig, world_size: int) -> dict[str, Any]:
    """{"sha256": ..., "values": {...}}: what a checkpoint of this run records."""
    from ftc import __version__

    values = identity_values(cfg, world_size)
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "ftc_version": __version__, "values": values}


def write_identity(folder: Path, identity: dict[str, Any]) -> None:
    """`folder/ftc_run_identity.json`, written whole or not at all."""
    partial = folder / f".{IDENTITY_FILE}.{os.getpid()}"
    partial.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, folder / IDENTITY_FILE)


def read_identity(folder: Path) -> dict[str, Any] | None:
    """The identity a checkpoint recorded; None when it has none. ValueError when it cannot be read."""
    path = folder / IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        identity = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(identity, dict) and isinstance(identity.get("sha256"), str) and isinstance(identity.get("values"), dict)):
            raise ValueError("not an ftc run identity")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read ({exc})") from None
    return identity


class RecordRunIdentity(TrainerCallback):
    """Writes the run's identity into every checkpoint folder (rank 0, after the Trainer saved it)."""

    def __init__(self, identity: dict[str, Any]) -> None:
        self.identity = identity

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            write_identity(folder, self.identity)


# --------------------------------------------------------------------------- comparing


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(name, the checkpoint's value, this run's value) for the values both record and that differ."""
    if recorded.get("sha256") == current["sha256"]:
        return []
    theirs, ours = recorded["values"], current["values"]
    return [(name, theirs[name], ours[name]) for name in ours if name in theirs and theirs[name] != ours[name]]


def _display_name(name: str) -> str:
    """`learning_rate` for optimizer.learning_rate (leaf names are unique); other names as they are."""
    section, _, leaf = name.partition(".")
    return leaf if leaf and leaf_index().get(leaf) == (section, leaf) else name


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _listed(diffs: list[tuple[str, Any, Any]], side: int) -> str:
    shown = ", ".join(f"{_display_name(d[0])} {_text(d[side])}" for d in diffs[:SHOWN_DIFFERENCES])
    more = len(diffs) - SHOWN_DIFFERENCES
    return shown + (f" and {more} more" if more > 0 else "")


def describe(checkpoint: Path, diffs: list[tuple[str, Any, Any]]) -> str:
    """`<checkpoint> was trained with lr 0.002, max_steps 20; this run has lr 0.01, max_steps 6`."""
    return f"{checkpoint} was trained with {_listed(diffs, 1)}; this run has {_listed(diffs, 2)}"


# --------------------------------------------------------------------------- choosing


def checkpoint_step(checkpoint: Path) -> int:
    """The global step a checkpoint was saved at (trainer_state.json; else its folder name)."""
    try:
        return int(json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        match = CHECKPOINT.match(checkpoint.name)
        return int(match.group(1)) if match else 0


def _given_checkpoint(cfg: RunConfig, world_size: int) -> Path:
    """The checkpoint folder named by resume_from_checkpoint (a remote one downloaded once per node into the
    cache); RuntimeUserError when it cannot be resumed."""
    uri = cfg.uri("checkpointing", "resume_from_checkpoint")
    path = _remote_checkpoint(uri) if uri else cfg.path("checkpointing", "resume_from_checkpoint")
    assert path is not None
    where = f"checkpointing.resume_from_checkpoint {uri or path}"
    if not path.is_dir():
        raise RuntimeUserError(
            f"{where}: no such folder; give true (the newest checkpoint in output_dir) or a checkpoint-<step> folder"
        )
    inside = checkpoints(path)
    if inside and not (path / TRAINER_STATE).is_file():
        names = ", ".join(p.name for _, p in inside)
        raise RuntimeUserError(f"{where} is not a checkpoint but holds {names}: give one of them")
    problem = checkpoint_problem(path, world_size)
    if problem is not None:
        raise RuntimeUserError(f"{where}: cannot resume from it: {problem}")
    return path


def _remote_checkpoint(uri: str) -> Path:
    """A local copy of the remote checkpoint `uri` (storage.cached_copy). One ftc uploaded is complete only with
    its marker; without one, its files are checked as a local checkpoint's are."""
    what = "checkpointing.resume_from_checkpoint"
    local = storage.cached_copy(uri, what)
    if not (local / storage.COMPLETE_MARKER).is_file():
        log.warning("%s %s has no %s (ftc marks each checkpoint it uploads whole): checking its files", what, uri, storage.COMPLETE_MARKER)
    return local


def chosen_checkpoint(cfg: RunConfig, folder: Path, world_size: int = 1) -> Path | None:
    """The newest complete checkpoint of `folder` (for `world_size` processes), or the one resume_from_checkpoint names.

    A requeued or restarted job continues from its own newest checkpoint when it has one, even
    when resume_from_checkpoint names another.
    """
    if isinstance(cfg.spec.checkpointing.resume_from_checkpoint, str):
        own = last_good_checkpoint(folder, world_size) if preemption.restarted() else None
        return own or _given_checkpoint(cfg, world_size)
    return last_good_checkpoint(folder, world_size)  # a half-written or corrupt checkpoint is skipped, with a warning


def _recorded(checkpoint: Path, forced: bool, is_main: bool) -> dict[str, Any] | None:
    """The checkpoint's identity; None, with a warning, when there is none to compare with."""
    try:
        recorded = read_identity(checkpoint)
    except ValueError as exc:
        if not forced:
            raise RuntimeUserError(f"{exc}: cannot check that it was trained with this run's values; {HOW_TO_FORCE}") from None
        reason = f"{exc}; resuming it unchecked because checkpointing.{FORCE_FLAG} is true"
    else:
        if recorded is not None:
            return recorded
        reason = f"{checkpoint} has no {IDENTITY_FILE} (an older ftc wrote it): cannot check that it was trained with this run's values; resuming it"
    if is_main:
        log.warning("%s", reason)
    return None


def check_resumable(cfg: RunConfig, checkpoint: Path, world_size: int, is_main: bool = True) -> None:
    """Refuse a checkpoint trained with other values (unless forced) or one with nothing left to train."""
    forced = cfg.spec.checkpointing.resume_ignore_config_change
    recorded = _recorded(checkpoint, forced, is_main)
    diffs = differences(recorded, run_identity(cfg, world_size)) if recorded is not None else []
    if diffs and not forced:
        raise RuntimeUserError(
            f"{describe(checkpoint, diffs)}: resuming would continue another run's training; run with its values, "
            f"use another output_dir to start afresh, or {HOW_TO_FORCE}"
        )
    step, max_steps = checkpoint_step(checkpoint), cfg.spec.training.max_steps
    if max_steps > 0 and (step > max_steps or (step == max_steps and diffs)):
        where = "past" if step > max_steps else "at"
        raise RuntimeUserError(
            f"{checkpoint} is at step {step}, {where} this run's max_steps {max_steps}: resuming would train nothing "
            "and return that checkpoint's model as this run's; use another output_dir or resume an earlier checkpoint "
            "(--resume_from_checkpoint PATH)"
        )
    if diffs and is_main:
        log.warning("%s: resuming it because checkpointing.%s is true", describe(checkpoint, diffs), FORCE_FLAG)


def fetch_remote_checkpoint(cfg: RunConfig, folder: Path) -> None:
    """Remote output_dir: download its newest complete checkpoint into `folder` (the staging folder's
    pytorch_model_folder) unless it is there whole, and remove the local checkpoints not complete remotely
    (cut uploads, another node's leftovers). One process per node does it; the others wait, then find it done."""
    assert cfg.output_uri is not None
    remote = f"{cfg.output_uri.rstrip('/')}/{MODEL_FOLDER}"
    with storage.node_lock(folder.parent / ".ftc_checkpoints.lock"):
        complete = {name: int(m.group(1)) for name in storage.complete_folders(remote) if (m := CHECKPOINT.match(name))}
        for _, path in checkpoints(folder):
            if path.name not in complete:
                log.info("removing %s: it is not a complete checkpoint in %s", path, remote)
                shutil.rmtree(path, ignore_errors=True)
        if not complete:
            return
        newest = max(complete, key=complete.__getitem__)
        if checkpoint_problem(folder / newest) is not None:
            folder.mkdir(parents=True, exist_ok=True)
            storage.download_folder(f"{remote}/{newest}", folder / newest)
            log.info("downloaded %s/%s to %s", remote, newest, folder / newest)


def checkpoint_to_resume(cfg: RunConfig, folder: Path, world_size: int, is_main: bool = True) -> Path | None:
    """The checkpoint this run resumes from (None: start from the model); refuses one of another run."""
    checkpoint = chosen_checkpoint(cfg, folder, world_size)
    if checkpoint is not None:
        check_resumable(cfg, checkpoint, world_size, is_main)
    return checkpoint
