"""The training loop's parameters: resuming, checkpoint cadence and rotation, FLOP counter, profiler, apply_ort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runtime.tiny import classification_rows, write_jsonl

pytestmark = pytest.mark.slow

# 240 rows / 16 = 15 steps per epoch; evaluation and checkpoints every 4 steps.
EVERY_4 = ("--evaluation_strategy", "steps", "--eval_steps", "4", "--save_total_limit", "-1", "--metric_for_best_model", "loss")


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _checkpoint_steps(folder: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))


# --------------------------------------------------------------------------- resuming


@pytest.fixture
def next_run(monkeypatch: pytest.MonkeyPatch):
    """`next_run(callback)`: the next in-process run's Trainer gets `callback` too."""
    import ftc.runtime.hf_trainer as hf_trainer

    original = hf_trainer.make_trainer

    def add(callback) -> None:
        def make(*a, **kw):
            trainer = original(*a, **kw)
            trainer.add_callback(callback)
            monkeypatch.setattr(hf_trainer, "make_trainer", original)  # this run only
            return trainer

        monkeypatch.setattr(hf_trainer, "make_trainer", make)

    return add


def _stop_at(n: int):
    """Stop with a checkpoint after optimizer step n, as a killed job would have left it."""
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == n:
                control.should_save = True
                control.should_training_stop = True

    return Stop()


def _counter():
    """Counts the optimizer steps a run trains (a resumed run trains only the rest)."""
    from transformers import TrainerCallback

    class Count(TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1

    return Count()


def test_stopped_and_resumed_run_ends_with_the_same_weights(compile_config, project: Path, run_inprocess, next_run) -> None:
    """Model, optimizer, scheduler, RNG (dropout) and data order are restored: stopping at step 10 of 20
    (in the middle of the first epoch's second half) and resuming gives the weights of an uninterrupted run."""
    config = compile_config()
    common = ("--max_steps", "20", "--lr_scheduler_type", "cosine", "--warmup_steps", "3", *EVERY_4)
    code, _, err = run_inprocess(config, *common, "--output_dir", str(project / "straight"))
    assert code == 0, err

    next_run(_stop_at(10))
    code, _, err = run_inprocess(config, *common, "--output_dir", str(project / "resumed"))
    assert code == 0, err
    resumed = project / "resumed" / "pytorch_model_folder"
    assert _checkpoint_steps(resumed) == [4, 8, 10]
    next_run(count := _counter())
    code, _, err = run_inprocess(config, *common, "--output_dir", str(project / "resumed"), "--resume_from_checkpoint", "true")
    assert code == 0, err
    assert f"resuming from {resumed / 'checkpoint-10'}" in err
    assert count.steps == 10  # steps 11-20 only

    straight = project / "straight" / "pytorch_model_folder"
    a, b = _weights(straight / "checkpoint-20"), _weights(resumed / "checkpoint-20")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5
    # ...and the interrupted run's step-10 weights really differ from the end (the comparison means something).
    mid = _weights(resumed / "checkpoint-10")
    assert max((mid[k] - a[k]).abs().max().item() for k in a) > 1e-3
    # The final (best) models agree too, and so do the learning rates the scheduler gave.
    fa, fb = _weights(straight), _weights(resumed)
    assert max((fa[k] - fb[k]).abs().max().item() for k in fa) < 1e-5
    sa = json.loads((straight / "checkpoint-20" / "trainer_state.json").read_text())["log_history"]
    sb = json.loads((resumed / "checkpoint-20" / "trainer_state.json").read_text())["log_history"]
    assert [h["eval_loss"] for h in sa if "eval_loss" in h] == pytest.approx([h["eval_loss"] for h in sb if "eval_loss" in h], abs=1e-5)


def _corrupt_truncated(ckpt: Path) -> str:
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return "model.safetensors is truncated"


def _corrupt_half_written(ckpt: Path) -> str:
    (ckpt / "trainer_state.json").unlink()
    (ckpt / "rng_state.pth").unlink()
    return "no trainer_state.json (half-written"


def _corrupt_optimizer(ckpt: Path) -> str:
    opt = ckpt / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])
    return "optimizer.pt is truncated or not a torch file"


@pytest.mark.parametrize("corrupt", [_corrupt_truncated, _corrupt_half_written, _corrupt_optimizer])
def test_a_broken_checkpoint_is_skipped_for_the_previous_one(compile_config, project: Path, run_inprocess, next_run, corrupt) -> None:
    config = compile_config()
    next_run(_stop_at(8))
    code, _, err = run_inprocess(config, "--max_steps", "12", *EVERY_4)
    assert code == 0, err
    folder = project / "out" / "pytorch_model_folder"
    assert _checkpoint_steps(folder) == [4, 8]
    reason = corrupt(folder / "checkpoint-8")
    next_run(count := _counter())
    code, _, err = run_inprocess(config, "--max_steps", "12", *EVERY_4, "--resume_from_checkpoint", "true")
    assert code == 0, err
    assert count.steps == 8  # from step 4
    assert f"skipping checkpoint {folder / 'checkpoint-8'}: {reason}" in err
    assert f"resuming from {folder / 'checkpoint-4'}" in err
    state = json.loads((folder / "checkpoint-12" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "eval_loss" in h] == [4, 8, 12]  # step 8 trained again


def test_checkpoint_problems_without_training(tmp_path: Path) -> None:
    """last_good_checkpoint on hand-made folders: the newest complete one wins, broken ones say why."""
    import torch
    from safetensors.torch import save_file

    from ftc.runtime.callbacks import checkpoint_problem, last_good_checkpoint

    def make(step: int) -> Path:
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        save_file({"w": torch.ones(4, 4)}, str(ckpt / "model.safetensors"))
        torch.save({"state": {}}, str(ckpt / "optimizer.pt"))
        torch.save({"last_epoch": step}, str(ckpt / "scheduler.pt"))
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        return ckpt

    assert last_good_checkpoint(tmp_path) is None
    good, bad = make(2), make(10)
    assert checkpoint_problem(good) is None
    (bad / "trainer_state.json").write_text('{"global_step": ')
    assert "trainer_state.json is not valid JSON" in checkpoint_problem(bad)
    assert last_good_checkpoint(tmp_path) == good  # 10 > 2 numerically, but broken
    (bad / "trainer_state.json").write_text("{}")
    (bad / "scheduler.pt").unlink()
    assert "no scheduler.pt" in checkpoint_problem(bad)
    (tmp_path / "checkpoint-7").mkdir()  # an empty folder (the job died right after mkdir)
    assert "half-written" in checkpoint_problem(tmp_path / "checkpoint-7")
    assert last_good_checkpoint(tmp_path) == good

    # two processes: rank 0 writes trainer_state.json without waiting; rank 1 killed before its RNG state
    for ckpt in (good, bad):
        torch.save({"cpu": torch.zeros(1)}, str(ckpt / "rng_state_0.pth"))
    (bad / "scheduler.pt").write_bytes((good / "scheduler.pt").read_bytes())
    assert checkpoint_problem(bad) is None  # the number of processes not given: not checked
    assert checkpoint_problem(bad, world_size=2) == (
        "no rng_state_1.pth and no ftc_run_identity.json (half-written: rank 1 did not finish saving its part)"
    )
    assert last_good_checkpoint(tmp_path, world_size=2) is None  # good lacks rank 1's too
    torch.save({"cpu": torch.zeros(1)}, str(good / "rng_state_1.pth"))
    assert last_good_checkpoint(tmp_path, world_size=2) == good
    (bad / "ftc_run_identity.json").write_text("{}")  # written after every rank saved (the part is on another node)
    assert checkpoint_problem(bad, world_size=2) is None
    assert checkpoint_problem(bad, world_size=1) is None


# --------------------------------------------------------------------------- cadence and rotation


def test_checkpoint_every_n_epochs_sets_evaluation_and_checkpoints(compile_config, project: Path, run_inprocess) -> None:
    small = write_jsonl(project / "data" / "small.jsonl", classification_rows(48, seed=5))  # 3 steps per epoch
    code, _, err = run_inprocess(compile_config(), "--train_file_path", str(small), "--num_train_epochs", "6",
                                 "--checkpoint_every_n_epochs", "2", "--save_total_limit", "-1", "--save_metrics", "true")
    assert code == 0, err
    assert _checkpoint_steps(project / "out" / "pytorch_model_folder") == [6, 12, 18]
    history = json.loads((project / "out" / "train_log_history.json").read_text())
    assert [h["step"] for h in history if "eval_loss" in h and "train_runtime" not in h][:3] == [6, 12, 18]


def test_max_num_checkpoints_spreads_them_over_the_run(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(compile_config(), "--max_steps", "12", "--max_num_checkpoints", "3",
                                 "--save_total_limit", "-1")
    assert code == 0, err
    assert _checkpoint_steps(project / "out" / "pytorch_model_folder") == [4, 8, 12]


def test_num_checkpoints_to_keep_keeps_the_best_by_validation_loss_and_the_newest(compile_config, project: Path, run_inprocess) -> None:
    # A learning rate this high makes the validation loss go up and down: the best are not the newest.
    code, _, err = run_inprocess(compile_config(), "--max_steps", "24", "--evaluation_strategy", "steps", "--eval_steps", "2",
                                 "--metric_for_best_model", "loss", "--num_checkpoints_to_keep", "3", "--lr", "0.02",
                                 "--save_metrics", "true")
    assert code == 0, err
    history = json.loads((project / "out" / "train_log_history.json").read_text())
    end = next(i for i, h in enumerate(history) if "train_runtime" in h)
    losses = {h["step"]: h["eval_loss"] for h in history[:end] if "eval_loss" in h}
    assert sorted(losses) == list(range(2, 25, 2))
    best3 = sorted(losses, key=lambda s: (losses[s], s))[:3]
    kept = _checkpoint_steps(project / "out" / "pytorch_model_folder")
    assert kept == sorted(set(best3) | {24})
    assert best3 != sorted(losses)[-3:], "the data should make the best differ from the newest"


def test_rotation_without_metrics_keeps_the_newest(tmp_path: Path) -> None:
    from ftc.runtime.callbacks import rotate_checkpoints

    for step in (3, 6, 9, 12):
        (tmp_path / f"checkpoint-{step}").mkdir()
    deleted = rotate_checkpoints(tmp_path, 2, [], "eval_loss", False)
    assert sorted(p.name for p in deleted) == ["checkpoint-3", "checkpoint-6"]
    history = [{"eval_accuracy": 0.9, "step": 9}, {"eval_accuracy": 0.5, "step": 12}]
    (tmp_path / "checkpoint-15").mkdir()
    rotate_checkpoints(tmp_path, 1, history, "eval_accuracy", True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-15", "checkpoint-9"]  # the best, the newest


# --------------------------------------------------------------------------- FLOP counter, profiler


def test_flop_counter_writes_flops_and_tflops(compile_config, project: Path, run_inprocess, tiny_model: Path) -> None:
    code, _, err = run_inprocess(compile_config(), "--flop_counter", "true", "--flop_counter_start", "2", "--max_steps", "5",
                                 "--evaluation_strategy", "no")
    assert code == 0, err
    result = json.loads((project / "out" / "flop_counter.json").read_text())
    assert result["step"] == 2 and result["counted"] is True
    assert result["samples"] == 16 and result["tflops_per_second"] > 0 and result["step_seconds"] > 0
    assert result["timed"] == "next step, without the counter"
    # Forward and backward: about 6 FLOPs per weight of the matrix multiplications per token.
    from transformers import AutoConfig

    c = AutoConfig.from_pretrained(str(tiny_model))
    per_layer = 4 * c.hidden_size**2 + 2 * c.hidden_size * c.intermediate_size
    matmul_weights = c.num_hidden_layers * per_layer
    assert result["tokens"] > 0
    estimate = 6 * matmul_weights * result["tokens"]
    assert 0.7 * estimate < result["flops"] < 3 * estimate, (result["flops"], estimate)
    assert "aten.mm" in result["by_operator"] or "aten.addmm" in result["by_operator"]


def test_profiler_writes_traces(compile_config, project: Path, run_inprocess) -> None:
    traces = project / "traces"
    code, _, err = run_inprocess(compile_config(), "--use_profiler", "true", "--max_steps", "8", "--evaluation_strategy", "no",
                                 "--profiler_dir", str(traces))
    assert code == 0, err
    (trace,) = traces.glob("rank0.*.pt.trace.json")
    events = json.loads(trace.read_text())["traceEvents"]
    steps = {e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#")}
    assert len(steps) == 3  # active 3 (after wait 1, warmup 2)
    assert "Self CPU" in (traces / "rank0.summary.txt").read_text()


def test_profiler_defaults_to_the_output_folder(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(compile_config(), "--use_profiler", "true", "--max_steps", "7", "--evaluation_strategy", "no")
    assert code == 0, err
    assert list((project / "out" / "profiler").glob("rank0.*.pt.trace.json"))


def test_flop_counter_with_profiler_is_refused(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(compile_config(), "--use_profiler", "true", "--flop_counter", "true")
    assert code == 1 and "cannot be used with flop_counter" in err
    assert not (project / "out" / "pytorch_model_folder").exists()


# --------------------------------------------------------------------------- apply_ort


def test_apply_ort_is_an_error_with_the_lint_message(compile_config, project: Path, run_inprocess) -> None:
    from ftc.cli.lint_report import lint_file

    compile_config()
    (finding,) = [f for f in lint_file(project / "spec.yaml", ["ort.apply_ort=true"]).findings if f.rule == "FTC107"]
    code, out, err = run_inprocess(compile_config(), "--apply_ort", "true")
    assert code == 1
    assert f"ftc.runtime: error: ort.apply_ort: {finding.message}\n" in err  # the same words as `ftc lint`
    assert "validation accuracy" not in out and not (project / "out" / "pytorch_model_folder").exists()


# --------------------------------------------------------------------------- the final evaluation


def _evaluations():
    """Records the step of every evaluation of the validation data."""
    from transformers import TrainerCallback

    class Evaluations(TrainerCallback):
        steps: list[int] = []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if metrics and any(k.startswith("eval_") for k in metrics):
                self.steps.append(state.global_step)

    Evaluations.steps = []
    return Evaluations()


def _compared(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.endswith(("_runtime", "_per_second", "_time"))}


def test_the_final_model_is_evaluated_once(compile_config, project: Path, run_inprocess, next_run, monkeypatch) -> None:
    import ftc.runtime.trainer as trainer_module

    config, epoch = compile_config(), ("--num_train_epochs", "1")  # 15 steps, evaluated at the end of the epoch
    reused = _evaluations()
    next_run(reused)
    code, _, err = run_inprocess(config, *epoch)
    assert code == 0, err
    assert reused.steps == [0, 15]  # before training, at the last step; none after
    metrics = json.loads((project / "out" / "metrics.json").read_text())
    assert "precision auto: fp32 (training on CPU)" in (project / "out" / "ftc_runtime.log").read_text()

    monkeypatch.setattr(trainer_module, "last_evaluation_of_final_model", lambda trainer: None)  # evaluate again
    again = _evaluations()
    next_run(again)
    code, _, err = run_inprocess(config, *epoch)
    assert code == 0, err
    assert again.steps == [0, 15, 15]
    assert _compared(metrics) == _compared(json.loads((project / "out" / "metrics.json").read_text()))


def test_the_best_model_loaded_at_the_end_is_evaluated(compile_config, project: Path, run_inprocess, next_run) -> None:
    # Accuracy reaches its best before the last step (a later equal one is not better): the model reloaded
    # at the end is not the one evaluated at the last step, so it is evaluated once more.
    counted = _evaluations()
    next_run(counted)
    code, _, err = run_inprocess(compile_config(), "--num_train_epochs", "3", "--save_metrics", "true",
                                 "--save_total_limit", "-1", "--evaluation_strategy", "steps", "--eval_steps", "5")
    assert code == 0, err
    history = json.loads((project / "out" / "train_log_history.json").read_text())
    accuracy = {h["step"]: h["eval_accuracy"] for h in history if "eval_accuracy" in h}
    best = min(step for step in accuracy if accuracy[step] == max(accuracy.values()))
    assert best != 45 and counted.steps == [0, *range(5, 46, 5), 45]
    assert json.loads((project / "out" / "metrics.json").read_text())["eval_accuracy"] == accuracy[best]


@pytest.mark.parametrize(
    ("best", "load_best", "reused"),
    [(8, True, True), (4, True, False), (4, False, True), (None, True, True)],
)
def test_the_last_evaluation_is_reused_only_for_the_final_weights(best, load_best: bool, reused: bool) -> None:
    from types import SimpleNamespace

    from ftc.runtime.trainer import last_evaluation_of_final_model

    history = [{"eval_loss": 0.5, "step": 4}, {"loss": 0.4, "step": 8}, {"eval_loss": 0.6, "epoch": 1.0, "step": 8}]
    state = SimpleNamespace(log_history=history, global_step=8, best_global_step=best)
    trainer = SimpleNamespace(state=state, args=SimpleNamespace(load_best_model_at_end=load_best))
    assert last_evaluation_of_final_model(trainer) == ({"eval_loss": 0.6, "epoch": 1.0} if reused else None)
    state.global_step = 9  # a step after the last evaluation
    assert last_evaluation_of_final_model(trainer) is None
