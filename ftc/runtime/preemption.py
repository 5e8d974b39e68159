"""Signals: SIGTERM and SIGINT stop the run with a checkpoint; SLURM's requeue signal also requeues the job.

Every run watches the stop signals SIGTERM (what Kubernetes, Ray, torchrun and most schedulers
send before they kill) and SIGINT (Ctrl-C):

- before training starts (loading data and model, the evaluation before training) a stop signal
  interrupts at once: nothing has been trained, so nothing is saved;
- during training the handler only sets a flag. `PreemptionCallback.on_step_end` turns the flag
  into `control.should_save` and `control.should_training_stop`, so the Trainer writes a full
  checkpoint (model, optimizer, scheduler, RNG and trainer state) at the end of the current
  optimizer step, whatever the save strategy, and leaves its loop;
- in the last training step or after it the run finishes its outputs (final model, metrics, MLflow
  model) and ends normally, exit 0: they are the result, a cut-off write would leave a broken model,
  and a checkpoint at the last step would have nothing left to resume.

A run stopped by a signal marks its MLflow run KILLED and exits with 128 + the signal's number
(143 for SIGTERM, 130 for SIGINT), through `Stopped`; the same command with
`--resume_from_checkpoint true` continues from the checkpoint. A second signal does not force
anything (torchrun passes on the signal a process group may already have had); SIGKILL stops at
once, and torchrun sends it 30 s after its SIGTERM.

The slurm target's job script (with `targets.slurm.requeue`) exports

- `FTC_PREEMPTION_SIGNAL` — the signal name (USR2 by default) that asks the training processes to
  stop. SLURM sends it to the batch script before the time limit; the script passes it on to every
  process of the job step (torchrun ignores it, the training processes catch it);
- `FTC_PREEMPTION_MARKER` — a file the runtime creates when it stopped for preemption, so the
  script knows to requeue the job (`scontrol requeue`) rather than end it.

The requeue signal checkpoints and stops the same way, but the run then ends with exit 0, its
MLflow run KILLED, and rank 0 writes the marker. Only the requeue signal writes the marker: a job
stopped by SIGTERM (scancel, the time limit) is not requeued as if it were preempted. The requeued
job sees `SLURM_RESTART_COUNT` > 0 and resumes from the newest checkpoint (`restarted()`).

With several processes the signal is all-reduced (MAX) at every step, so every rank stops at the
same step, for the same signal, even when the signal reaches them at different times or only some
of them; a stop signal wins over the requeue signal. The handlers are installed in the main thread
only (Python delivers signals there: where the runtime runs in another thread, as under Ray Train,
the signals keep their handlers) and restored when the run ends. The runtime's hooks
(ftc/runtime/trainer.py: `run`, `_guarded` and `train`):

    preempt = preemption.for_run()         # first thing: installs the handlers
    try:
        ... load data and model ...        # a stop signal raises Interrupted here
        trainer.add_callback(preempt.callback())
        result = trainer.train(resume_from_checkpoint=resume)
        if preempt.stopped:                # checkpoint written at the step the signal came in
            tracking.finish("KILLED")
            if not preempt.requeue:
                raise preempt.error(out)   # Stopped: exit 128 + signal
            preempt.finish()               # marker file + log line; the job script requeues the job
            return {}
    except preemption.Interrupted as exc:  # before training: exit 128 + signal
        raise exc.error() from None
    finally:
        preempt.uninstall()
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftc.runtime.errors import Stopped, UsageError, resume_hint

SIGNAL_ENV = "FTC_PREEMPTION_SIGNAL"
MARKER_ENV = "FTC_PREEMPTION_MARKER"
RESTART_ENV = "SLURM_RESTART_COUNT"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_CODE = 64  # all-reduced code of a signal: priority * _CODE + its number (signal numbers are below 64)

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


class Interrupted(KeyboardInterrupt):
    """A stop signal before training started, raised by the handler at once (as Ctrl-C raises KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signal.Signals(signum)

    def error(self) -> Stopped:
        return Stopped(f"stopped by {self.signum.name} before training started; nothing was saved", self.signum)


class Preemption:
    """The signals a run acts on: the stop signals, and the requeue signal `signum` (SLURM) when given."""

    def __init__(self, signum: int | None, marker: Path | None = None, stop_signals: tuple[int, ...] = ()) -> None:
        self.signum = signal.Signals(signum) if signum is not None else None
        self.marker = marker
        self.stop_signals = tuple(signal.Signals(s) for s in stop_signals if s != signum)
        self.pending: signal.Signals | None = None  # the signal received in this process (a stop signal wins)
        self.signal: signal.Signals | None = None  # the signal the ranks agreed on and stopped for
        self.stopped_at: int | None = None  # the global step the Trainer stopped at
        self.at_once = True  # until training starts a stop signal raises Interrupted (once); then it sets `pending`
        self._previous: dict[signal.Signals, Any] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, install: bool = True) -> Preemption | None:
        """The requeue signal asked for by the launcher's environment (handler installed), or None."""
        self = cls._from(environ, ())
        if self.signum is None:
            return None
        if install:
            self.install()
        return self

    @classmethod
    def for_run(cls, environ: Mapping[str, str] | None = None, install: bool = True) -> Preemption:
        """The stop signals and the environment's requeue signal, if any (handlers installed)."""
        self = cls._from(environ, STOP_SIGNALS)
        if install:
            self.install()
        return self

    @classmethod
    def _from(cls, environ: Mapping[str, str] | None, stop_signals: tuple[int, ...]) -> Preemption:
        env = os.environ if environ is None else environ
        name = env.get(SIGNAL_ENV, "").strip()
        marker = env.get(MARKER_ENV, "").strip()
        return cls(signal_number(name) if name else None, Path(marker) if marker else None, stop_signals)

    @property
    def signals(self) -> tuple[signal.Signals, ...]:
        return (*self.stop_signals, *([self.signum] if self.signum is not None else []))

    def install(self) -> None:
        """Catch the signals in this process (main thread only: Python delivers signals there)."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Put back the handlers `install` replaced (the runtime may run in-process, as in the tests)."""
        while self._previous:
            signum, previous = self._previous.popitem()
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: Any) -> None:
        received = signal.Signals(signum)
        if received != self.signum and self.at_once:
            self.at_once = False
            raise Interrupted(received)
        self._note(received)  # no logging or I/O in a signal handler

    def _note(self, received: signal.Signals) -> None:
        if self.pending is None or _code(received, self.signum) > _code(self.pending, self.signum):
            self.pending = received

    def request(self, signum: int | None = None) -> None:
        """Ask for a checkpoint and stop, as the signal `signum` (default: the requeue signal) does."""
        received = signal.Signals(signum) if signum is not None else self.signum
        assert received is not None, "no requeue signal: request a stop signal"
        self._note(received)

    @property
    def requested(self) -> bool:
        return self.pending is not None

    @property
    def stopped(self) -> bool:
        """Whether the Trainer stopped early because of a signal (checkpoint written)."""
        return self.stopped_at is not None

    @property
    def requeue(self) -> bool:
        """Whether the run stopped for the requeue signal (the job script requeues it), not a stop signal."""
        return self.stopped and self.signal == self.signum

    def callback(self) -> Any:
        """A transformers TrainerCallback acting on this request."""
        return make_callback(self)

    def error(self, out: Path | str) -> Stopped:
        """The error a run stopped by a stop signal ends with (exit 128 + the signal's number)."""
        assert self.signal is not None
        return Stopped(
            f"stopped by {self.signal.name} at step {self.stopped_at} after writing checkpoint-{self.stopped_at}; "
            f"{resume_hint(out)}",
            self.signal,
        )

    def finish(self) -> None:
        """After the Trainer stopped for the requeue signal: tell the job script to requeue (rank 0 writes the marker)."""
        assert self.signum is not None
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


def for_run(environ: Mapping[str, str] | None = None) -> Preemption:
    """`Preemption.for_run`: the handlers of a run (stop signals, and the requeue signal when asked for)."""
    return Preemption.for_run(environ)


def _code(received: signal.Signals | None, requeue: signal.Signals | None) -> int:
    """A signal as a number to all-reduce with MAX: 0 for none; a stop signal above the requeue signal."""
    if received is None:
        return 0
    return (1 if received == requeue else 2) * _CODE + int(received)


def _all_ranks_agree(received: signal.Signals | None, requeue: signal.Signals | None, device: Any) -> signal.Signals | None:
    """The signal any rank received (a stop signal first); `received` itself outside distributed runs."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return received
    tensor = torch.tensor([_code(received, requeue)], dtype=torch.int32, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    code = int(tensor.item())
    return signal.Signals(code % _CODE) if code else None


def make_callback(preemption: Preemption) -> Any:
    from transformers import TrainerCallback

    class PreemptionCallback(TrainerCallback):
        """Save a checkpoint and stop training at the end of the step in which the signal came."""

        def __init__(self) -> None:
            self.preemption = preemption

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.preemption.at_once = False  # from here on a stop signal stops at the end of a step
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            p = self.preemption
            received = _all_ranks_agree(p.pending, p.signum, args.device)
            if received is None:
                return control
            if state.max_steps and state.global_step >= state.max_steps:
                return control  # the last step: training ends anyway, and the run writes its final outputs
            control.should_save = True
            control.should_training_stop = True
            p.stopped_at, p.signal = state.global_step, received
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
    "Interrupted",
    "MARKER_ENV",
    "Preemption",
    "RESTART_ENV",
    "SIGNAL_ENV",
    "STOP_SIGNALS",
    "for_run",
    "from_env",
    "make_callback",
    "restart_count",
    "restarted",
    "signal_number",
]
