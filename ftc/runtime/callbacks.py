"""The training loop's extras: throughput, the FLOP counter, the profiler, and checkpoints.

- `Throughput` counts the samples and real (non-pad) tokens the Trainer trains on and the time
  it spends training (fetching batches, forward, backward, optimizer step; not evaluating,
  logging or saving). `ThroughputCallback` shows samples/s and tokens/s on the Trainer's tqdm
  progress bar; `FtcTrainer.log` adds `samples_per_second` and `tokens_per_second` (since the
  previous training log) to every training log record, so they reach the log file, MLflow,
  `train_log_history.json` and `training_curves.png`. Tokens are the ones in `attention_mask`
  (else every position of `input_ids`): padding is not counted. With several processes the
  counts are summed over them at each log; the progress bar shows rank 0's counts times the
  number of processes.
- `FlopCounter` (tracking.flop_counter): counts, with torch.utils.flop_counter.FlopCounterMode,
  the FLOPs of optimizer step `flop_counter_start` (forward and backward of all its micro-batches),
  times the next step without the counter (counting slows a step down), and writes
  `flop_counter.json` (FLOPs, seconds, TFLOP/s) into the output folder.
- `ProfilerCallback` (tracking.use_profiler): torch.profiler over training steps with the schedule
  wait 1, warmup 2, active 3; traces (`*.pt.trace.json`, for Perfetto / chrome://tracing /
  TensorBoard) and a text summary of the most expensive operators go to tracking.profiler_dir
  (default `<output_dir>/profiler`).
- `KeepBestCheckpoints` (checkpointing.save_total_limit, alias num_checkpoints_to_keep): after every
  save, keeps the N best checkpoints by metric_for_best_model (the validation loss unless the spec
  names another metric: Anyscale's num_checkpoints_to_keep) and the most recent one (needed to
  resume), and deletes the others. Without evaluation metrics it keeps the N most recent. This
  replaces the Trainer's own rotation (which keeps the N most recent plus the best).
- `AllRanksSaved`: at every save, the ranks wait for each other (a barrier) before anything else
  reads the checkpoint: rank 0 then writes the run identity (`ftc_run_identity.json`), rotates older
  checkpoints and uploads, so a rank killed while saving leaves a checkpoint without the identity,
  and the older checkpoints stay.
- `last_good_checkpoint` picks the checkpoint to resume from: the newest complete one. A folder
  that is half-written (the Trainer writes trainer_state.json last; with several processes, a rank
  that did not write its RNG state, when the run identity written after all of them is missing too)
  or holds a truncated or unreadable file is skipped with a warning naming it and the reason.
  ftc/runtime/resume.py then checks that it was trained with the run's values (`ftc_run_identity.json`).
- `UploadCheckpoints` (checkpointing.output_dir a remote folder: s3://, gs://, abfs://): after every
  save, rank 0 uploads the checkpoint to `<output_dir>/pytorch_model_folder/checkpoint-<step>` and
  then writes `.ftc_complete` into it, so that a resume never picks a half-uploaded checkpoint; a
  checkpoint this run uploaded and the rotation deleted locally is deleted there too. Rank 0 uploads
  the files of its node: a checkpoint whose shards other nodes write (DeepSpeed ZeRO, FSDP on several
  nodes) needs an output_dir every node sees.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

log = logging.getLogger("ftc.runtime")

FLOPS_FILE = "flop_counter.json"
PROFILER_FOLDER = "profiler"
# torch.profiler schedule (llama-recipes): skip 1 step, warm up 2, record 3.
PROFILER_WAIT, PROFILER_WARMUP, PROFILER_ACTIVE = 1, 2, 3
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
IDENTITY_FILE = "ftc_run_identity.json"  # rank 0 writes it once every rank saved its part (ftc/runtime/resume.py)
BAR_REFRESH_S = 1.0


# --------------------------------------------------------------------------- throughput


def _count(inputs: Any) -> tuple[int, Any]:
    """(samples, real tokens) of one micro-batch; tokens stay a tensor (no device sync)."""
    ids = inputs.get("input_ids") if hasattr(inputs, "get") else None
    mask = inputs.get("attention_mask") if hasattr(inputs, "get") else None
    if ids is None or not hasattr(ids, "shape") or len(ids.shape) == 0:
        return 0, 0
    samples = int(ids.shape[0])
    positions = inputs.get("position_ids")
    if mask is None and positions is not None and samples == 1:  # packed without padding: count sequence starts
        samples = int((positions == 0).sum().item())
    tokens = mask.sum() if mask is not None and hasattr(mask, "sum") else ids.numel()
    return samples, tokens


class Throughput:
    """Samples, tokens and training seconds, in total and since the last training log."""

    def __init__(self, world_size: int = 1) -> None:
        self.world_size = max(1, world_size)
        self.samples = 0  # this process
        self._tokens: Any = 0  # this process; a device tensor once counted
        self.seconds = 0.0  # time spent fetching batches and in optimizer steps
        self._since: float | None = None  # start of the current timed span
        self._log_mark = (0, 0, 0.0)  # (samples, tokens, seconds) at the previous training log (all processes)
        self._bar_mark = (0, 0, 0.0)

    # the Trainer's hooks: FtcTrainer.get_batch_samples / training_step and ThroughputCallback
    def start(self) -> None:
        if self._since is None:
            self._since = time.perf_counter()

    def stop(self) -> None:
        if self._since is not None:
            self.seconds += time.perf_counter() - self._since
            self._since = None

    def count(self, inputs: Any) -> None:
        samples, tokens = _count(inputs)
        self.samples += samples
        self._tokens = self._tokens + tokens

    def tokens(self) -> int:
        value = self._tokens
        return int(value.item()) if hasattr(value, "item") else int(value)

    def totals(self, reduce: bool = False) -> tuple[int, int, float]:
        """(samples, tokens, seconds) of all processes: summed over them (reduce) or estimated from this one."""
        samples, tokens = self.samples, self.tokens()
        if reduce and self.world_size > 1:
            import torch
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                device = self._tokens.device if hasattr(self._tokens, "device") else "cpu"
                t = torch.tensor([samples, tokens], dtype=torch.float64, device=device)
                dist.all_reduce(t)
                return int(t[0].item()), int(t[1].item()), self.seconds
        return samples * self.world_size, tokens * self.world_size, self.seconds

    def log_fields(self) -> dict[str, float]:
        """samples_per_second and tokens_per_second since the previous call (all processes)."""
        samples, tokens, seconds = self.totals(reduce=True)
        s0, t0, sec0 = self._log_mark
        self._log_mark = (samples, tokens, seconds)
        span = seconds - sec0
        if span <= 0 or samples <= s0:
            return {}
        return {"samples_per_second": round((samples - s0) / span, 3), "tokens_per_second": round((tokens - t0) / span, 3)}

    def bar_text(self) -> str | None:
        """The progress bar's postfix, over the time since the previous refresh."""
        samples, tokens, seconds = self.totals()
        s0, t0, sec0 = self._bar_mark
        span = seconds - sec0
        if span <= 0 or samples <= s0:
            return None
        self._bar_mark = (samples, tokens, seconds)
        return f"{_si((samples - s0) / span)} samples/s, {_si((tokens - t0) / span)} tokens/s"


def _si(value: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.1f}"


class ThroughputCallback(TrainerCallback):
    """Times the optimizer steps and refreshes the progress bar's samples/s and tokens/s (at most once a second)."""

    def __init__(self, throughput: Throughput) -> None:
        self.throughput = throughput
        self._bar_time = 0.0
        self._progress: ProgressCallback | None = None

    def attach(self, trainer: Any) -> None:
        self._progress = next(
            (cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ProgressCallback)), None
        )

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.throughput.start()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.throughput.stop()
        now = time.perf_counter()
        if not state.is_world_process_zero or now - self._bar_time < BAR_REFRESH_S:
            return
        bar = getattr(self._progress, "training_bar", None)
        if bar is None:
            return
        self._bar_time = now
        text = self.throughput.bar_text()
        if text:
            bar.set_postfix_str(text, refresh=False)


# --------------------------------------------------------------------------- FLOP counter


class FlopCounter(TrainerCallback):
    """Counts the FLOPs of optimizer step `start` (0-based) and writes flop_counter.json."""

    def __init__(self, start: int, path: Path | None, world_size: int = 1, cuda: bool = False) -> None:
        self.start, self.path, self.world_size, self.cuda = start, path, max(1, world_size), cuda
        self.flops = 0
        self.by_operator: dict[str, int] = {}
        self.samples = 0
        self.tokens = 0
        self.counted_seconds: float | None = None  # the counted step, slowed down by counting
        self.step_seconds: float | None = None  # the next step, without the counter
        self._began = 0.0
        self._step = -1
        self.written = False

    def counting(self, global_step: int) -> bool:
        """Whether the micro-batch the Trainer is about to run belongs to the counted step."""
        return global_step == self.start and not self.written

    def run(self, step: Any, inputs: Any) -> Any:
        """Run one micro-batch (`step()`) under FlopCounterMode and add up its FLOPs."""
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            loss = step()
        self.flops += int(counter.get_total_flops())
        for op, n in counter.get_flop_counts().get("Global", {}).items():
            name = str(op)
            self.by_operator[name] = self.by_operator.get(name, 0) + int(n)
        samples, tokens = _count(inputs)
        self.samples += samples
        self.tokens += int(tokens.item()) if hasattr(tokens, "item") else int(tokens)
        return loss

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step in (self.start, self.start + 1) and not self.written:
            self._sync()
            self._began, self._step = time.perf_counter(), state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # global_step has just been incremented: the step that ran is global_step - 1
        ran = state.global_step - 1
        if self.written or ran != self._step:
            return
        self._sync()
        seconds = time.perf_counter() - self._began
        if ran == self.start:
            self.counted_seconds = seconds
        else:
            self.step_seconds = seconds
            self.write(state.is_world_process_zero)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.written:
            if self.counted_seconds is None:
                log.warning(
                    "tracking.flop_counter: training ended after %d step(s), before step flop_counter_start %d; "
                    "no FLOPs counted", state.global_step, self.start,
                )
            self.write(state.is_world_process_zero)

    def write(self, is_main: bool) -> None:
        self.written = True
        seconds = self.step_seconds or self.counted_seconds
        result: dict[str, Any] = {
            "step": self.start,
            "counted": self.counted_seconds is not None,
            "flops": self.flops,
            "flops_all_processes": self.flops * self.world_size,
            "processes": self.world_size,
            "samples": self.samples,
            "tokens": self.tokens,
            "step_seconds": seconds,
            "timed": "next step, without the counter" if self.step_seconds else "the counted step (slowed by counting)",
            "tflops_per_second": self.flops / seconds / 1e12 if seconds else None,
            "tflops_per_second_all_processes": self.flops * self.world_size / seconds / 1e12 if seconds else None,
            "by_operator": dict(sorted(self.by_operator.items(), key=lambda kv: -kv[1])),
        }
        if self.counted_seconds is not None:
            log.info(
                "FLOP counter: step %d: %.3g FLOPs per process, %.3g TFLOP/s", self.start, self.flops,
                result["tflops_per_second"] or 0.0,
            )
        if is_main and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(result, indent=2) + "\n")


# --------------------------------------------------------------------------- profiler


class ProfilerCallback(TrainerCallback):
    """torch.profiler over steps 2-7 of training (wait 1, warm up 2, record 3); traces into `folder`."""

    def __init__(self, folder: Path, rank: int = 0, cuda: bool = False) -> None:
        self.folder, self.rank, self.cuda = folder, rank, cuda
        self.profiler: Any = None
        self.steps = 0
        self.traces: list[Path] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from torch.profiler import ProfilerActivity, profile, schedule

        self.folder.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.profiler = profile(
            activities=activities,
            schedule=schedule(wait=PROFILER_WAIT, warmup=PROFILER_WARMUP, active=PROFILER_ACTIVE, repeat=1),
            on_trace_ready=self._ready,
            record_shapes=True,
            profile_memory=True,
        )
        self.profiler.start()

    def _ready(self, prof: Any) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        trace = self.folder / f"rank{self.rank}.{stamp}.pt.trace.json"
        prof.export_chrome_trace(str(trace))
        self.traces.append(trace)
        sort = "self_cuda_time_total" if self.cuda else "self_cpu_time_total"
        summary = prof.key_averages().table(sort_by=sort, row_limit=30)
        (self.folder / f"rank{self.rank}.summary.txt").write_text(
            f"torch.profiler, steps {PROFILER_WAIT + PROFILER_WARMUP + 1}-{PROFILER_WAIT + PROFILER_WARMUP + PROFILER_ACTIVE} "
            f"of training (wait {PROFILER_WAIT}, warmup {PROFILER_WARMUP}, active {PROFILER_ACTIVE}); "
            f"sorted by {sort}\n\n{summary}\n"
        )
        log.info("profiler trace written to %s", trace)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.profiler is None:
            return
        self.profiler.step()
        self.steps += 1
        if self.steps >= PROFILER_WAIT + PROFILER_WARMUP + PROFILER_ACTIVE:
            self._stop()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.profiler is not None:
            needed = PROFILER_WAIT + PROFILER_WARMUP + PROFILER_ACTIVE
            log.warning(
                "tracking.use_profiler: training ran %d step(s); the profiler needs %d (wait %d, warmup %d, active %d), "
                "so it recorded %s", self.steps, needed, PROFILER_WAIT, PROFILER_WARMUP, PROFILER_ACTIVE,
                "a partial trace" if self.steps > PROFILER_WAIT + PROFILER_WARMUP else "nothing",
            )
            self._stop()

    def _stop(self) -> None:
        profiler, self.profiler = self.profiler, None
        profiler.stop()


# --------------------------------------------------------------------------- checkpoints


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The `checkpoint-<step>` folders of `folder`, by step."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = CHECKPOINT.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _safetensors_problem(path: Path) -> str | None:
    """A truncated or garbled safetensors file: its header must parse and its size match the header."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"{path.name} is truncated (header of {n} bytes in a file of {size})"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        return f"{path.name} cannot be read ({exc})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + n + end:
        return f"{path.name} is truncated ({size} bytes, its header says {8 + n + end})"
    return None


def _zip_problem(path: Path) -> str | None:
    """torch.save files are zip archives: a truncated one has no readable central directory."""
    try:
        with zipfile.ZipFile(path) as z:
            z.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        return f"{path.name} is truncated or not a torch file ({exc})"
    return None


def _rank_state_problem(path: Path, world_size: int | None) -> str | None:
    """A checkpoint of `world_size` processes without the run identity (written once every rank saved its
    part) and without some rank's RNG state: that rank was cut off while saving (rank 0 writes trainer_state.json
    without waiting for the others)."""
    if not world_size or world_size <= 1 or (path / IDENTITY_FILE).is_file() or (path / "rng_state.pth").is_file():
        return None
    missing = [rank for rank in range(world_size) if not (path / f"rng_state_{rank}.pth").is_file()]
    if not missing:
        return None
    return f"no rng_state_{missing[0]}.pth and no {IDENTITY_FILE} (half-written: rank {missing[0]} did not finish saving its part)"


def checkpoint_problem(path: Path, world_size: int | None = None) -> str | None:
    """Why the Trainer cannot resume from checkpoint folder `path`; None when it looks complete.

    `world_size`: the processes of the run that resumes (their RNG states are looked for); None: not checked."""
    state = path / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE} (half-written: the Trainer writes it last)"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{TRAINER_STATE} is not valid JSON ({exc})"
    if problem := _rank_state_problem(path, world_size):
        return problem
    weights = [
        p for p in ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
        if (path / p).is_file()
    ]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as exc:
            return f"{index.name} cannot be read ({exc})"
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            return f"weight shard {missing[0]} is missing"
        weights += shards
    deepspeed = (path / "latest").is_file()
    fsdp = sorted(path.glob("pytorch_model_fsdp_*"))  # FSDP sharded state dict: torch.distributed.checkpoint folders
    if not weights and not deepspeed and not fsdp:
        return "no model weights (model.safetensors, adapter_model.safetensors, ...)"
    for folder in fsdp + sorted(path.glob("optimizer_*")):
        if not (folder / ".metadata").is_file():
            return f"{folder.name} has no .metadata (half-written: torch.distributed.checkpoint writes it last)"
    for name in weights:
        problem = _safetensors_problem(path / name) if name.endswith(".safetensors") else _zip_problem(path / name)
        if problem:
            return problem
    if deepspeed:
        tag = (path / "latest").read_text().strip()
        if not (path / tag).is_dir():
            return f"DeepSpeed state folder {tag} (named in 'latest') is missing"
    else:
        for name in ("optimizer.pt", "scheduler.pt"):
            if name == "optimizer.pt" and fsdp and (path / "optimizer_0").is_dir():
                continue
            if not (path / name).is_file():
                return f"no {name} (the optimizer and scheduler states are needed to resume exactly)"
    for extra in sorted(path.glob("*.pt")) + sorted(path.glob("rng_state*.pth")):
        problem = _zip_problem(extra)
        if problem:
            return problem
    return None


def last_good_checkpoint(folder: Path, world_size: int | None = None) -> Path | None:
    """The newest checkpoint of `folder` that can be resumed from (by `world_size` processes, when given);
    broken ones are skipped with a warning."""
    for step, path in reversed(checkpoints(folder)):
        problem = checkpoint_problem(path, world_size)
        if problem is None:
            return path
        log.warning("skipping checkpoint %s: %s; trying the previous one", path, problem)
    return None


def rotate_checkpoints(
    folder: Path,
    keep: int,
    log_history: list[dict[str, Any]],
    metric: str | None,
    greater_is_better: bool,
    protect: str | Path | None = None,
) -> list[Path]:
    """Delete all checkpoints but the `keep` best by `metric`, the newest one and `protect`; returns the deleted."""
    found = checkpoints(folder)
    if keep <= 0 or len(found) <= keep:
        return []
    scores: dict[int, float] = {}
    if metric:
        for entry in log_history:
            value = entry.get(metric)
            if isinstance(value, (int, float)) and "step" in entry:
                scores[int(entry["step"])] = float(value)
    scored = sorted((s for s, _ in found if s in scores), key=lambda s: (-scores[s] if greater_is_better else scores[s], s))
    unscored = sorted((s for s, _ in found if s not in scores), reverse=True)  # newest first
    kept = set((scored + unscored)[:keep]) | {found[-1][0]}
    protected = Path(protect).resolve() if protect else None
    deleted = []
    for step, path in found:
        if step in kept or (protected is not None and path.resolve() == protected):
            continue
        shutil.rmtree(path, ignore_errors=True)
        deleted.append(path)
    return deleted


class AllRanksSaved(TrainerCallback):
    """At every save, a barrier: every rank has written its part of the checkpoint (RNG state, shards) before the
    callbacks after this one write the run identity, rotate older checkpoints, upload or report it."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()


class KeepBestCheckpoints(TrainerCallback):
    """checkpointing.save_total_limit (num_checkpoints_to_keep): the N best by metric_for_best_model, plus the newest."""

    def __init__(self, keep: int, metric: str | None, greater_is_better: bool) -> None:
        self.keep, self.metric, self.greater_is_better = keep, metric, greater_is_better

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not args.should_save:
            return
        deleted = rotate_checkpoints(
            Path(args.output_dir), self.keep, state.log_history, self.metric, self.greater_is_better,
            protect=state.best_model_checkpoint,
        )
        if deleted:
            logging.getLogger("ftc.runtime.train").info(
                "save_total_limit %d: deleted %s (keeping the best by %s and the newest)",
                self.keep, ", ".join(p.name for p in deleted), self.metric or "recency",
            )


class UploadCheckpoints(TrainerCallback):
    """checkpointing.output_dir on remote storage: every saved checkpoint uploaded (rank 0), marker last."""

    def __init__(self, remote_folder: str) -> None:
        self.remote_folder = remote_folder.rstrip("/")  # the URI of TrainingArguments.output_dir
        self.uploaded: set[str] = set()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from ftc.runtime import storage

        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not (state.is_world_process_zero and folder.is_dir()):
            return
        target = f"{self.remote_folder}/{folder.name}"
        started = time.perf_counter()
        storage.upload_folder(folder, target, marker=True)
        self.uploaded.add(folder.name)
        log.info("uploaded %s to %s in %.1f s", folder.name, target, time.perf_counter() - started)
        for name in sorted(self.uploaded):  # rotated out locally (save_total_limit): out there too
            if not (Path(args.output_dir) / name).exists():
                storage.remove(f"{self.remote_folder}/{name}")
                self.uploaded.discard(name)
