"""Signals: SIGTERM and SIGINT stop a run with a checkpoint (exit 128 + signal, MLflow run KILLED); the requeue
signal alone writes SLURM's requeue marker (ftc/runtime/preemption.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.runtime.conftest import REPO, run_module

pytestmark = pytest.mark.slow

MAX_STEPS = "40"

# The real runtime (`ftc.runtime.main`) with a hook that tells the test where the run is:
#   training  - prints a line at step 3, then slows each step down so that the signal comes mid-training;
#   preparing - prints a line while the task loads the model, and waits there (a slow model load).
LAUNCH = textwrap.dedent(
    """\
    import sys, time
    import ftc.runtime.hf_trainer as h
    import ftc.runtime.trainer as t
    from transformers import TrainerCallback

    mode = sys.argv.pop(1)

    def say(text):
        print(f"ftc-test: {text}", file=sys.stderr, flush=True)

    class Slow(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                say("training")
            if state.global_step >= 3:
                time.sleep(0.2)

    class SlowTask:
        def __init__(self, task):
            self.task = task

        def __getattr__(self, name):
            return getattr(self.task, name)

        def prepare(self, cfg, data):
            say("preparing")
            time.sleep(300)

    if mode == "training":
        make = h.make_trainer
        def make_trainer(*a, **kw):
            trainer = make(*a, **kw)
            trainer.add_callback(Slow())
            return trainer
        h.make_trainer = make_trainer
    else:
        get_task = t.get_task
        t.get_task = lambda name: SlowTask(get_task(name))

    from ftc.runtime.main import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _signal_when(mode: str, signum: int, args: list[str], cwd: Path, tmp_path: Path) -> tuple[int, str]:
    """Run the runtime in a new process, send `signum` when it reaches `mode`; (exit code, stderr)."""
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    for name in ("RANK", "WORLD_SIZE", "FTC_PREEMPTION_SIGNAL", "FTC_PREEMPTION_MARKER", "SLURM_RESTART_COUNT"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, *args], cwd=cwd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if f"ftc-test: {mode}" in line:
                proc.send_signal(signum)
                break
        _, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(seen) + rest


def _mlflow_status(out: Path) -> str:
    from mlflow.tracking import MlflowClient

    run_id = json.loads((out / "ftc_tracking.json").read_text())["mlflow_run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    return str(client.get_run(run_id).info.status)


def _newest_checkpoint(folder: Path) -> int:
    return max(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))


def test_sigterm_mid_training_writes_a_checkpoint_and_exits_143(compile_config, project: Path, tmp_path: Path) -> None:
    config = compile_config()
    out = project / "out"
    args = ["--config", str(config), "--max_steps", MAX_STEPS]
    code, err = _signal_when("training", signal.SIGTERM, args, project, tmp_path)
    assert code == 143, err
    folder = out / "pytorch_model_folder"
    step = _newest_checkpoint(folder)
    assert 3 <= step < int(MAX_STEPS)
    assert f"ftc.runtime: stopped by SIGTERM at step {step} after writing checkpoint-{step}" in err
    assert f"--output_dir {out} --resume_from_checkpoint true" in err
    assert "Traceback" not in err
    assert not (out / "metrics.json").exists()  # stopped: no final outputs
    assert _mlflow_status(out) == "KILLED"

    resumed = run_module([*args, "--resume_from_checkpoint", "true"], cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {folder / f'checkpoint-{step}'}" in resumed.stderr
    assert _newest_checkpoint(folder) == int(MAX_STEPS)
    state = json.loads((folder / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == int(MAX_STEPS)
    assert (out / "metrics.json").is_file()
    assert _mlflow_status(out) == "FINISHED"  # the resumed run continues the same MLflow run


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_loading_stops_at_once(compile_config, project: Path, tmp_path: Path, signum: signal.Signals) -> None:
    config = compile_config()
    out = project / "out"
    code, err = _signal_when("preparing", signum, ["--config", str(config)], project, tmp_path)
    assert code == 128 + signum, err
    assert f"ftc.runtime: stopped by {signum.name} before training started; nothing was saved" in err
    assert "Traceback" not in err
    assert not (out / "pytorch_model_folder").exists()
    assert _mlflow_status(out) == "KILLED"


def test_only_the_requeue_signal_writes_the_requeue_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (scancel, a time limit) stops the run but must not requeue the job as if it had been preempted."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from ftc.runtime import preemption

    monkeypatch.delenv("RANK", raising=False)
    env = {"FTC_PREEMPTION_SIGNAL": "USR2", "FTC_PREEMPTION_MARKER": str(tmp_path / "marker")}
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)}
    p = preemption.for_run(env)
    try:
        args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, report_to="none")
        callback, state, control = p.callback(), TrainerState(max_steps=10, global_step=10), TrainerControl()
        callback.on_train_begin(args, state, control)
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGTERM)  # both came: the stop signal wins
        assert p.pending == signal.SIGTERM
        callback.on_step_end(args, state, control)  # the last step: training ends anyway, with its outputs
        assert not control.should_training_stop and not p.stopped
        state.global_step = 4
        callback.on_step_end(args, state, control)
        assert control.should_save and control.should_training_stop and p.stopped_at == 4
        assert p.stopped and not p.requeue
        error = p.error(tmp_path / "o")
        assert error.exit_code == 143 and "stopped by SIGTERM at step 4 after writing checkpoint-4" in str(error)
    finally:
        p.uninstall()
    assert {s: signal.getsignal(s) for s in before} == before  # the runtime may run in-process: handlers restored
    assert not (tmp_path / "marker").exists()

    requeue = preemption.Preemption(signal.SIGUSR2, tmp_path / "marker", preemption.STOP_SIGNALS)
    requeue.request()
    state, control = TrainerState(max_steps=10, global_step=4), TrainerControl()
    requeue.callback().on_step_end(args, state, control)
    assert requeue.requeue and requeue.stopped_at == 4
    requeue.finish()
    assert (tmp_path / "marker").read_text() == "4\n"
