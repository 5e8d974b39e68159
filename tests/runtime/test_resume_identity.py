"""Resume checks the checkpoint against this run's config (ftc/runtime/resume.py).

Every checkpoint records the resolved values it was trained with (`ftc_run_identity.json`); resuming
a checkpoint of other values is refused in one line naming them, unless
checkpointing.resume_ignore_config_change is true; a checkpoint past max_steps is always refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ftc.runtime.resume import IDENTITY_FILE

pytestmark = pytest.mark.slow

# 240 rows / 16 = 15 steps per epoch; evaluation and checkpoints every 4 steps, all kept.
EVERY_4 = ("--evaluation_strategy", "steps", "--eval_steps", "4", "--save_total_limit", "-1")
FORCE = ("--resume_ignore_config_change", "true")
RESUME = ("--resume_from_checkpoint", "true")


def _steps(folder: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*"))


def _trained(out: Path, max_steps: int, config: Path, run_inprocess, *extra: str) -> Path:
    code, _, err = run_inprocess(config, "--output_dir", str(out), "--max_steps", str(max_steps), *EVERY_4, *extra)
    assert code == 0, err
    return out / "pytorch_model_folder"


def test_a_checkpoint_records_the_values_it_was_trained_with(compile_config, project: Path, run_inprocess) -> None:
    from ftc.runtime.config import load_config, parse_args
    from ftc.runtime.resume import run_identity

    config = compile_config()
    folder = _trained(project / "out", 4, config, run_inprocess)
    identity = json.loads((folder / "checkpoint-4" / IDENTITY_FILE).read_text())
    values = identity["values"]
    assert values["optimizer.learning_rate"] == 0.002 and values["training.max_steps"] == 4
    assert values["training.seed"] == 0 and values["world_size"] == 1 and values["task"] == "text_classification"
    assert not any(k.startswith(("checkpointing.", "tracking.", "evaluation.eval", "env.", "targets.")) for k in values)
    args = parse_args(["--output_dir", str(project / "out"), "--max_steps", "4", *EVERY_4]).overrides
    assert identity["sha256"] == run_identity(load_config(config, args), 1)["sha256"]


def test_the_identity_ignores_what_does_not_change_the_result(compile_config, project: Path) -> None:
    from ftc.runtime.config import Override, load_config
    from ftc.runtime.resume import run_identity

    config = compile_config()

    def sha(*pairs: tuple[str, str]) -> str:
        return str(run_identity(load_config(config, [Override(k, v) for k, v in pairs]), 1)["sha256"])

    base = sha()
    same = [
        ("output_dir", "elsewhere"), ("logging_steps", "3"), ("save_total_limit", "5"), ("eval_steps", "7"),
        ("resume_from_checkpoint", "true"), ("resume_ignore_config_change", "true"), ("dataloader_num_workers", "2"),
        ("tracking_uri", "sqlite:///x.db"), ("experiment_name", "other"), ("preprocess_batch_size", "10"),
    ]
    for pair in same:
        assert sha(pair) == base, pair
    for pair in [("learning_rate", "0.01"), ("max_steps", "6"), ("seed", "7"), ("per_device_train_batch_size", "8"),
                 ("apply_lora", "true"), ("lr_scheduler_type", "cosine"), ("precision", "bf16"), ("max_seq_length", "16")]:
        assert sha(pair) != base, pair
    assert run_identity(load_config(config), 2)["sha256"] != base  # the process count: the global batch
    # a secret-shaped value is masked before it is hashed or written
    cfg = load_config(config)
    cfg.spec.data.train_file_path = "https://u:hunter2pw@127.0.0.1/t.jsonl"
    assert "hunter2pw" not in json.dumps(run_identity(cfg, 1))


def test_an_unreadable_identity_is_refused_unless_forced(compile_config, project: Path, caplog) -> None:
    from ftc.runtime.config import Override, load_config
    from ftc.runtime.errors import RuntimeUserError
    from ftc.runtime.resume import check_resumable

    config = compile_config()
    ckpt = project / "checkpoint-3"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text('{"global_step": 3}')
    (ckpt / IDENTITY_FILE).write_text('{"sha256": "ab')  # cut short
    with pytest.raises(RuntimeUserError, match=r"ftc_run_identity.json cannot be read .*--resume_ignore_config_change true"):
        check_resumable(load_config(config), ckpt, 1)
    check_resumable(load_config(config, [Override("resume_ignore_config_change", "true")]), ckpt, 1)
    assert "resuming it unchecked because checkpointing.resume_ignore_config_change is true" in caplog.text


@pytest.mark.parametrize("how", ["flag", "slurm_requeue"])
def test_resuming_another_runs_checkpoint_is_refused(compile_config, project: Path, run_inprocess, monkeypatch, how: str) -> None:
    """The issue's repro: a finished run's folder copied, then resumed with other values."""
    config = compile_config()
    old = _trained(project / "old", 8, config, run_inprocess).parent
    shutil.copytree(old, project / "reuse")
    metrics = (project / "reuse" / "metrics.json").read_bytes()
    if how == "slurm_requeue":
        monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    resume = RESUME if how == "flag" else ()
    changed = ("--learning_rate", "0.01", "--max_steps", "6", "--seed", "7")
    code, out, err = run_inprocess(config, "--output_dir", str(project / "reuse"), *EVERY_4, *resume, *changed)
    assert code == 1, err
    ckpt = project / "reuse" / "pytorch_model_folder" / "checkpoint-8"
    message = next(line for line in err.splitlines() if "was trained with" in line)
    assert f"{ckpt} was trained with max_steps 8, seed 0, learning_rate 0.002; this run has max_steps 6, seed 7, learning_rate 0.01" in message
    assert "--resume_ignore_config_change true" in message and "another output_dir" in message
    assert "Traceback" not in err + out
    assert _steps(ckpt.parent) == [4, 8] and (project / "reuse" / "metrics.json").read_bytes() == metrics


def test_a_checkpoint_past_max_steps_is_refused_even_when_forced(compile_config, project: Path, run_inprocess) -> None:
    config = compile_config()
    folder = _trained(project / "out", 8, config, run_inprocess)
    code, _, err = run_inprocess(config, "--output_dir", str(project / "out"), "--max_steps", "6", *EVERY_4, *RESUME, *FORCE)
    assert code == 1, err
    assert f"{folder / 'checkpoint-8'} is at step 8, past this run's max_steps 6: resuming would train nothing" in err
    assert _steps(folder) == [4, 8]


def test_a_changed_max_steps_resumes_when_forced_with_a_warning(compile_config, project: Path, run_inprocess) -> None:
    config = compile_config()
    folder = _trained(project / "out", 4, config, run_inprocess)
    code, _, err = run_inprocess(config, "--output_dir", str(project / "out"), "--max_steps", "8", *EVERY_4, *RESUME)
    assert code == 1 and "was trained with max_steps 4; this run has max_steps 8" in err
    code, _, err = run_inprocess(config, "--output_dir", str(project / "out"), "--max_steps", "8", *EVERY_4, *RESUME, *FORCE)
    assert code == 0, err
    assert f"{folder / 'checkpoint-4'} was trained with max_steps 4; this run has max_steps 8: resuming it because" in err
    assert f"resuming from {folder / 'checkpoint-4'}" in err
    assert json.loads((folder / "checkpoint-8" / IDENTITY_FILE).read_text())["values"]["training.max_steps"] == 8


def test_the_same_config_resumes_without_a_warning(compile_config, project: Path, run_inprocess) -> None:
    """Also at max_steps (a job preempted at its last step has only its outputs left to write)."""
    config = compile_config()
    folder = _trained(project / "out", 8, config, run_inprocess)
    (project / "out" / "metrics.json").unlink()
    code, _, err = run_inprocess(config, "--output_dir", str(project / "out"), "--max_steps", "8", *EVERY_4, *RESUME)
    assert code == 0, err
    assert f"resuming from {folder / 'checkpoint-8'}" in err and "trained with" not in err
    assert (project / "out" / "metrics.json").is_file()


def test_a_checkpoint_of_an_older_ftc_resumes_with_a_warning(compile_config, project: Path, run_inprocess) -> None:
    config = compile_config()
    folder = _trained(project / "out", 4, config, run_inprocess)
    (folder / "checkpoint-4" / IDENTITY_FILE).unlink()
    code, _, err = run_inprocess(config, "--output_dir", str(project / "out"), "--max_steps", "8", *EVERY_4, *RESUME)
    assert code == 0, err
    assert f"{folder / 'checkpoint-4'} has no {IDENTITY_FILE} (an older ftc wrote it): cannot check" in err
    assert _steps(folder) == [4, 8]


def test_resume_from_an_explicit_checkpoint_folder(compile_config, project: Path, run_inprocess) -> None:
    config = compile_config()
    source = _trained(project / "a", 8, config, run_inprocess) / "checkpoint-4"
    code, _, err = run_inprocess(
        config, "--output_dir", str(project / "b"), "--max_steps", "8", *EVERY_4, "--resume_from_checkpoint", str(source)
    )
    assert code == 0, err
    assert f"resuming from {source}" in err
    state = json.loads((project / "b" / "pytorch_model_folder" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8 and _steps(project / "b" / "pytorch_model_folder") == [8]  # steps 5-8 only

    code, _, err = run_inprocess(config, "--output_dir", str(project / "c"), "--resume_from_checkpoint", str(project / "nowhere"))
    assert code == 1
    assert f"checkpointing.resume_from_checkpoint {project / 'nowhere'}: no such folder" in err
    code, _, err = run_inprocess(config, "--output_dir", str(project / "c"), "--resume_from_checkpoint", str(source.parent))
    assert code == 1 and f"{source.parent} is not a checkpoint but holds checkpoint-4, checkpoint-8: give one of them" in err
    code, _, err = run_inprocess(
        config, "--output_dir", str(project / "c"), "--max_steps", "8", *EVERY_4, "--resume_from_checkpoint", str(source), "--seed", "3"
    )
    assert code == 1 and f"{source} was trained with seed 0; this run has seed 3" in err
