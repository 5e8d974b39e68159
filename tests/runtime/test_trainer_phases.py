"""The trainer's entry point and its module-level Trainer: extra callbacks, the "step" schedule."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from ftc.runtime.config import Override, load_config


def test_run_gives_the_trainer_extra_callbacks(compile_config, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainerCallback

    from ftc.runtime.trainer import run

    class Steps(TrainerCallback):
        seen: list[int] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.seen.append(state.global_step)

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    monkeypatch.delenv("FTC_RAY_JOB", raising=False)
    overrides = {"max_steps": "3", "evaluation_strategy": "no", "save_model": "false", "save_as_mlflow_model": "false"}
    cfg = load_config(compile_config(), [Override(k, v) for k, v in overrides.items()])
    metrics = run(cfg, callbacks=[Steps()])
    assert Steps.seen == [1, 2, 3]
    written = json.loads((project / "out" / "metrics.json").read_text())
    assert metrics == {k: v for k, v in written.items() if k != "ranks"}
    # one process: one rank, on this host (no SLURM, no Ray)
    assert written["ranks"] == [{"rank": 0, "local_rank": 0, "node": socket.gethostname(), "hostname": socket.gethostname()}]
    assert f"rank 0 of 1 on node {socket.gethostname()}" in (project / "out" / "ftc_runtime.log").read_text()


def test_the_node_is_slurms_name_then_the_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.runtime.placement import node_name, this_rank

    assert node_name("host-a", {"SLURMD_NODENAME": "n2", "FTC_RAY_JOB": "{}"}) == "n2"
    assert node_name("host-a", {}) == "host-a"
    assert node_name("host-a", {"FTC_RAY_JOB": "{}"}) == "host-a"  # Ray not started in this process: no node id
    assert this_rank(3, {"LOCAL_RANK": "1", "SLURMD_NODENAME": "n2"}) == {
        "rank": 3, "local_rank": 1, "node": "n2", "hostname": socket.gethostname()
    }


def test_the_step_schedule_warms_up_then_decays_each_epoch() -> None:
    from ftc.runtime.hf_trainer import StepSchedule

    schedule = StepSchedule(gamma=0.5, per_epoch=3)
    assert [schedule.factor(step, warmup=2) for step in range(7)] == [0.5, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert [schedule.factor(step, warmup=0) for step in range(4)] == [1.0, 1.0, 1.0, 0.5]


def test_seq2seq_tasks_get_the_same_trainer_with_generating_evaluation() -> None:
    from transformers import Seq2SeqTrainer

    from ftc.runtime.hf_trainer import FtcSeq2SeqTrainer, FtcTrainer

    mro = FtcSeq2SeqTrainer.__mro__
    assert mro.index(FtcTrainer) < mro.index(Seq2SeqTrainer)  # ftc's overrides come first, then generation
