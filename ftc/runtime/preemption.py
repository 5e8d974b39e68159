"""Preemption: on the scheduler's warning signal, write a checkpoint and stop; after a requeue, resume.

The slurm target's job script (with `targets.slurm.requeue`) exports

- `FTC_PREEMPTION_SIGNAL` — the signal name (USR2 by default) that asks the training processes to
  stop. SLURM sends it to the batch script before the time limit; the script passes it on to every
  process of the job step (torchrun ignores it, the training processes catch it);
- `FTC_PREEMPTION_MARKER` — a file the runtime creates when it stopped for preemption, so the
  script knows to requeue the job (`scontrol requeue`) rather than end it.

The signal handler only sets a flag. `PreemptionCallback.on_step_end` turns the flag into
`control.should_save` and `control.should_training_stop`, so the Trainer writes a full checkpoint
(model, optimizer, scheduler, RNG and trainer state) at the end of the current optimizer step and
leaves its loop. With several processes the flag is all-reduced (MAX) at every step, so every rank
stops at the same step even when the signal reaches them at different times. The requeued job
sees `SLURM_RESTART_COUNT` > 0 and resumes from the newest checkpoint (`restarted()`).

Nothing here runs unless `FTC_PREEMPTION_SIGNAL` is set. The runtime's hooks (ftc/runtime/trainer.py,
`_run`):

    from ftc.runtime import preemption
    preempt = preemption.from_env()        # first thing: installs the handler; None when not asked for
    ...
    trainer = make_trainer(...)
    if preempt is not None:
        trainer.add_callback(preempt.callback())
    ...
    if s.checkpointing.resume_from_checkpoint or preemption.restarted():   # a requeued job resumes
        resume = get_last_checkpoint(...)
    result = trainer.train(resume_from_checkpoint=resume)
    if preempt is not None and preempt.stopped:
        preempt.finish()                   # marker file + log line; the job script requeues the job
        return {}                          # no final evaluation, model or metrics: the next run writes them
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftc.runtime.errors import UsageError

SIGNAL_ENV = "FTC_PREEMPTION_SIGNAL"
MARKER_ENV = "FTC_PREEMPTION_MARKER"
RESTART_ENV = "SLURM_RESTART_COUNT"

log = logging.getLogger("ftc.runtime")


def signal_number(name: str) -> signal.Signals:
    """`USR2`, `SIGUSR2` or `12` as a signal."""
    text = name.strip().upper()
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError):
        raise UsageError(f"{SIGNAL_ENV}={name!r} is not a signal name (USR1, USR2, ...)") from None


def restart_count(environ: Mapping[str, str] | None = None) -> int:
    """How many times SLURM has restarted (requeued) this job; 0 outside SLURM."""
    value = (os.environ if environ is None else environ).get(RESTART_ENV, "0")
    try:
        return max(0, int(value))
    except ValueError:
        return 0


def restarted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this run is a requeued job, which must resume from its newest checkpoint."""
    return restart_count(environ) > 0


class Preemption:
    """The preemption request of this process: a signal sets it, the callback acts on it."""

    def __init__(self, signum: int, marker: Path | None = None) -> None:
        self.signum = signal.Signals(signum)
        self.marker = marker
        self._event = threading.Event()
        self.stopped_at: int | None = None  # the global step the Trainer stopped at

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, install: bool = True) -> Preemption | None:
        """The preemption asked for by the launcher's environment (handler installed), or None."""
        env = os.environ if environ is None else environ
        name = env.get(SIGNAL_ENV, "").strip()
        if not name:
            return None
        marker = env.get(MARKER_ENV, "").strip()
        self = cls(signal_number(name), Path(marker) if marker else None)
        if install:
            self.install()
        return self

    def install(self) -> None:
        """Catch the signal in this process (main thread only: Python delivers signals there)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self._event.set()  # no logging or I/O in a signal handler

    def request(self) -> None:
        """Ask for a checkpoint and stop, as the signal does."""
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    @property
    def stopped(self) -> bool:
        """Whether the Trainer stopped early because of the signal (checkpoint written)."""
        return self.stopped_at is not None

    def callback(self) -> Any:
        """A transformers TrainerCallback acting on this request."""
        return make_callback(self)

    def finish(self) -> None:
        """After the Trainer stopped: tell the job script to requeue (rank 0 writes the marker)."""
        log.info(
            "stopped at step %s on SIG%s after writing a checkpoint; the requeued job resumes from it",
            self.stopped_at, self.signum.name.removeprefix("SIG"),
        )
        if self.marker is not None and int(os.environ.get("RANK", "0")) == 0:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(f"{self.stopped_at}\n")


def from_env(environ: Mapping[str, str] | None = None) -> Preemption | None:
    """`Preemption.from_env`: the handler is installed when the environment asks for preemption."""
    return Preemption.from_env(environ)


def _all_ranks_agree(flag: bool, device: Any) -> bool:
    """True when any rank has the flag (all-reduce MAX); the flag itself outside distributed runs."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def make_callback(preemption: Preemption) -> Any:
    from transformers import TrainerCallback

    class PreemptionCallback(TrainerCallback):
        """Save a checkpoint and stop training at the end of the step in which the signal came."""

        def __init__(self) -> None:
            self.preemption = preemption

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if not _all_ranks_agree(self.preemption.requested, args.device):
                return control
            if state.max_steps and state.global_step >= state.max_steps:
                return control  # the last step: training ends anyway, with its final outputs
            control.should_save = True
            control.should_training_stop = True
            self.preemption.stopped_at = state.global_step
            return control

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if self.preemption.stopped:
                # The checkpoint (with the best-model record in its trainer_state.json) is written. Forget
                # the best model for the rest of this run: with save_total_limit 1 the Trainer would
                # otherwise delete this newest checkpoint as it ends, and load the best model for nothing.
                state.best_model_checkpoint = None
            return control

    return PreemptionCallback()


__all__ = [
    "MARKER_ENV",
    "Preemption",
    "RESTART_ENV",
    "SIGNAL_ENV",
    "from_env",
    "make_callback",
    "restart_count",
    "restarted",
    "signal_number",
]
