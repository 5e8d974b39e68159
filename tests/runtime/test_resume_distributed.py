"""Resume under each scale-out strategy: DDP, FSDP, DeepSpeed ZeRO-2 and ZeRO-3, two CPU processes.

A run stopped after 10 of 20 steps (`--max_steps 10`: a constant learning rate, so the schedule
does not depend on where training ends) and resumed with `--max_steps 20 --resume_from_checkpoint
true --resume_ignore_config_change true` (the changed max_steps is meant) trains only steps 11-20,
ends at step 20, and its per-step losses equal those of one uninterrupted plain DDP run. Each strategy computes the same updates as DDP in float32, so one
reference serves all four. Observed: DDP 0, FSDP and ZeRO-2/3 1.2e-7 relative at worst over steps
11-20, against neighbouring steps that differ by over 1e-2 (asserted), so a resume that lost the
weights, the optimizer state or the data order of either rank would leave the curve.

A rank SIGKILLed while it saves its part of a checkpoint (DDP): rank 0 has written the whole folder,
trainer_state.json included, but rank 1 not its RNG state, so the checkpoint looks complete to rank 0
alone. The resume skips it (no rng_state_1.pth, no ftc_run_identity.json: rank 0 writes that once every
rank saved) and continues from the checkpoint before, which the rotation (save_total_limit 1) kept
because it waits for every rank too; the curve is the uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.runtime.multiproc import LM_SPEC, compile_and_run, compile_local, launch_env, losses, make_lm_project

pytestmark = pytest.mark.slow

# 20 steps of 2 x 8 rows at a constant learning rate, a checkpoint every 5 steps, a loss at every step.
RESUME_SPEC = (
    LM_SPEC.replace("max_steps: 40", "max_steps: 20")
    .replace("warmup_steps: 5", "warmup_steps: 0\n  lr_scheduler_type: constant")
    .replace("  evaluation_strategy: 'no'\n", "  evaluation_strategy: steps\n  eval_steps: 5\n")
    + "tracking:\n  logging_strategy: steps\n  logging_steps: 1\n  save_metrics: true\n"
)
NEEDS_DEEPSPEED = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
STRATEGIES = {
    "fsdp": "fsdp:\n  enable_fsdp: true\n  fsdp_activation_checkpointing: false\n",
    "zero2": "deepspeed:\n  apply_deepspeed: true\n  deepspeed_stage: '2'\n",
    "zero3": "deepspeed:\n  apply_deepspeed: true\n  deepspeed_stage: '3'\n",
    "ddp": "",
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """Per-step losses of one uninterrupted 20-step DDP run."""
    project = tmp_path_factory.mktemp("reference")
    make_lm_project(project)
    out, _ = compile_and_run(project, RESUME_SPEC, "straight", 2)
    curve = losses(out)
    assert sorted(curve) == list(range(1, 21))
    assert max(abs(curve[s + 1] - curve[s]) / curve[s] for s in range(1, 20)) > 1e-2  # other batches: far apart
    return curve


@pytest.mark.parametrize(
    "strategy",
    [
        "ddp",
        "fsdp",
        pytest.param("zero2", marks=NEEDS_DEEPSPEED),
        pytest.param("zero3", marks=NEEDS_DEEPSPEED),
    ],
)
def test_stopped_and_resumed_run_follows_the_uninterrupted_curve(
    tmp_path: Path, reference: dict[int, float], strategy: str
) -> None:
    make_lm_project(tmp_path)
    spec = RESUME_SPEC + STRATEGIES[strategy]
    out, _ = compile_and_run(tmp_path, spec, strategy, 2, "--max_steps", "10")
    folder = out / "pytorch_model_folder"
    assert (folder / "checkpoint-10").is_dir() and not (folder / "checkpoint-15").exists()

    resume = ("--resume_from_checkpoint", "true", "--resume_ignore_config_change", "true")  # max_steps 10 -> 20, on purpose
    _, result = compile_and_run(tmp_path, spec, strategy, 2, "--max_steps", "20", *resume, out=out)
    assert f"resuming from {folder / 'checkpoint-10'}" in result.stderr
    state = json.loads((folder / "checkpoint-20" / "trainer_state.json").read_text())
    assert state["global_step"] == 20
    resumed = losses(out)
    assert set(range(11, 21)) <= set(resumed)
    for step in range(11, 21):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-4), (strategy, step, resumed[step], reference[step])


# sitecustomize.py of the killed run: rank 1, at its part (the RNG state) of checkpoint FTC_TEST_HOLD_SAVE,
# writes its pid to FTC_TEST_HOLD_MARKER and waits there for the SIGKILL.
HOLD_SAVE = """\
import os

if os.environ.get("RANK") == "1" and os.environ.get("FTC_TEST_HOLD_SAVE"):
    import time
    from pathlib import Path

    from transformers import Trainer

    _save_rng_state = Trainer._save_rng_state

    def _held(self, output_dir):
        if Path(output_dir).name == os.environ["FTC_TEST_HOLD_SAVE"]:
            marker = Path(os.environ["FTC_TEST_HOLD_MARKER"])
            marker.with_suffix(".tmp").write_text(str(os.getpid()))
            marker.with_suffix(".tmp").rename(marker)
            while True:
                time.sleep(0.1)
        _save_rng_state(self, output_dir)

    Trainer._save_rng_state = _held
"""


def _wait_for(what: str, ready: Callable[[], bool], run: subprocess.Popen[bytes], log: Path, limit_s: float = 600) -> None:
    """Poll `ready` until it holds; fail when the run ends first or `limit_s` passes."""
    deadline = time.monotonic() + limit_s
    while not ready():
        assert run.poll() is None, f"the run ended (exit {run.returncode}) before {what}:\n{log.read_text()[-5000:]}"
        assert time.monotonic() < deadline, f"no {what} after {limit_s} s"
        time.sleep(0.05)


def _complete_json(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False


def _killed_while_saving(project: Path, script: str, out: Path, checkpoint: str) -> None:
    """Run `script` (two ranks) until rank 1 saves its part of `checkpoint` and rank 0 has written the rest of it,
    then SIGKILL rank 1; the run must fail."""
    hooks, marker, log = project / "hooks", project / "rank1.pid", project / "killed.log"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HOLD_SAVE)
    env = launch_env()
    env.update(
        PYTHONPATH=os.pathsep.join([str(hooks), env["PYTHONPATH"]]),
        FTC_TEST_HOLD_SAVE=checkpoint, FTC_TEST_HOLD_MARKER=str(marker),
    )
    with log.open("wb") as sink:
        run = subprocess.Popen(
            ["bash", script, "--output_dir", str(out)], cwd=project, env=env, stdout=sink, stderr=sink, start_new_session=True
        )
        try:
            _wait_for(f"rank 1 saving {checkpoint}", marker.exists, run, log)
            state = out / "pytorch_model_folder" / checkpoint / "trainer_state.json"
            _wait_for(f"rank 0's {state}", lambda: _complete_json(state), run, log)
            os.kill(int(marker.read_text()), signal.SIGKILL)
            assert run.wait(timeout=300) != 0, log.read_text()[-5000:]
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)  # the launcher and both ranks


def _logged_after(log: Path, text: str, since: float) -> float:
    """The time (epoch seconds) of the first line of `log` (ftc_runtime.log) from `since` on that holds `text`."""
    for line in log.read_text().splitlines():
        if text in line and (at := datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()) >= since:
            return at
    raise AssertionError(f"no {text!r} in {log} since {since}")


def test_rank_killed_while_saving_resumes_from_the_last_complete_checkpoint(
    tmp_path: Path, reference: dict[int, float]
) -> None:
    make_lm_project(tmp_path)
    out, folder = tmp_path / "runs" / "killed", tmp_path / "runs" / "killed" / "pytorch_model_folder"
    _killed_while_saving(tmp_path, compile_local(tmp_path, RESUME_SPEC, "killed", 2), out, "checkpoint-15")
    partial = folder / "checkpoint-15"
    assert (partial / "trainer_state.json").is_file() and (partial / "rng_state_0.pth").is_file()
    assert not (partial / "rng_state_1.pth").exists() and not (partial / "ftc_run_identity.json").exists()
    assert (folder / "checkpoint-10" / "ftc_run_identity.json").is_file()  # not rotated out: the rotation waits for rank 1

    started = time.time()
    _, result = compile_and_run(tmp_path, RESUME_SPEC, "killed", 2, "--resume_from_checkpoint", "true", out=out)
    assert f"skipping checkpoint {partial}: no rng_state_1.pth and no ftc_run_identity.json" in result.stderr
    assert f"resuming from {folder / 'checkpoint-10'}" in result.stderr
    # the time to recover, for docs/reliability.md (pytest -rP shows it): the resubmit (compile, launch) to its first step
    print(f"recovered in {_logged_after(out / 'ftc_runtime.log', 'step 11: ', started) - started:.1f} s")
    assert json.loads((folder / "checkpoint-20" / "trainer_state.json").read_text())["global_step"] == 20
    resumed = losses(out)
    assert set(range(11, 21)) <= set(resumed)
    for step in range(11, 21):
        assert resumed[step] == pytest.approx(reference[step], rel=1e-4), (step, resumed[step], reference[step])
