"""The runtime's command line and config: overrides by leaf name, alias or path; path resolution."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ftc.runtime.config import Override, load_config, override_path, parse_args
from ftc.runtime.errors import UsageError
from ftc.runtime.main import main


def test_parse_args_forms() -> None:
    args = parse_args(["--config", "c.json", "--lr", "1e-4", "--seed=3", "--apply_lora", "--local_rank=0", "--x", "-1"])
    assert args.config == "c.json"
    assert [(o.name, o.text) for o in args.overrides] == [("lr", "1e-4"), ("seed", "3"), ("apply_lora", "true"), ("x", "-1")]


def test_parse_args_rejects_positional() -> None:
    with pytest.raises(UsageError, match="unexpected argument 'oops'"):
        parse_args(["--config", "c.json", "oops"])


def test_override_paths() -> None:
    assert override_path("learning_rate") == ("optimizer", "learning_rate")
    assert override_path("lr") == ("optimizer", "learning_rate")  # alias
    assert override_path("output_dir") == ("checkpointing", "output_dir")
    assert override_path("training.seed") == ("training", "seed")
    assert override_path("lora_config.r") == ("lora", "lora_r")  # section alias and parameter alias
    assert override_path("env.vars.OMP_NUM_THREADS") == ("env", "vars", "OMP_NUM_THREADS")


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("learnin_rate", "did you mean --learning_rate?"),
        ("training.sed", "did you mean --training.seed?"),
        ("lora_rank", "did you mean --lora_r"),
    ],
)
def test_unknown_override_suggests(name: str, hint: str) -> None:
    with pytest.raises(UsageError) as err:
        override_path(name)
    assert f"unknown parameter --{name}" in str(err.value)
    assert hint in str(err.value)


def test_load_config_applies_overrides(compile_config, project: Path, tmp_path: Path) -> None:
    config = compile_config()
    cfg = load_config(
        config,
        [
            Override("lr", "5e-4"),
            Override("num_train_epochs", "2"),
            Override("apply_lora", "true"),
            Override("target_modules", "query,value"),
            Override("metric_for_best_model", "loss"),
            Override("output_dir", "elsewhere"),
            Override("validation_file_path", "val.jsonl"),
        ],
        cwd=tmp_path,
    )
    s = cfg.spec
    assert s.optimizer.learning_rate == 5e-4
    assert s.training.num_train_epochs == 2
    assert s.lora.apply_lora is True
    assert s.lora.target_modules == ["query", "value"]
    assert cfg.derived["metric_greater_is_better"] is False  # recomputed for the new metric
    # Paths in the config resolve against the spec's folder; paths given on the command line against the cwd.
    assert cfg.path("data", "train_file_path") == project / "data" / "train.jsonl"
    assert cfg.path("data", "validation_file_path") == tmp_path / "val.jsonl"
    assert cfg.output_dir == tmp_path / "elsewhere"
    assert cfg.model_ref("model", "model_selector_output") == str(project / "models" / "tiny")


def test_default_output_dir_is_relative_to_spec(compile_config, project: Path, tmp_path: Path) -> None:
    cfg = load_config(compile_config(), [], cwd=tmp_path)
    assert cfg.output_dir == project / "out"
    assert cfg.derived["metric_greater_is_better"] is True


def test_missing_model_folder_is_a_hub_id(compile_config, tmp_path: Path) -> None:
    cfg = load_config(compile_config(), [Override("model_name_or_path", "org/some-model")], cwd=tmp_path)
    assert cfg.model_ref("model", "model_selector_output") == "org/some-model"


def test_build_moved_with_spec_still_resolves(compile_config, project: Path, tmp_path: Path) -> None:
    config = compile_config()
    moved = tmp_path / "moved"
    project.rename(moved)
    cfg = load_config(moved / "build" / "local" / "ftc.resolved.json", [], cwd=tmp_path)
    assert cfg.path("data", "train_file_path") == moved / "data" / "train.jsonl"
    assert not config.exists()


def test_main_unknown_key_exits_2(compile_config, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", str(compile_config()), "--learnin_rate", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "ftc.runtime: error: unknown parameter --learnin_rate; did you mean --learning_rate?"


def test_main_invalid_value_exits_2(compile_config, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--config", str(compile_config()), "--lora_r", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--lora_r 0: Input should be greater than or equal to 1" in err
    assert "Traceback" not in err


def test_main_needs_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "--config is required" in capsys.readouterr().err


def test_main_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.json")]) == 2
    assert f"config file not found: {tmp_path / 'nope.json'}" in capsys.readouterr().err


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "usage: python -m ftc.runtime --config" in capsys.readouterr().out


def test_unsupported_task_is_named(compile_config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A task of the spec without a runtime module fails with a clear error (every task has one now: drop one)."""
    from ftc.runtime import tasks

    monkeypatch.delitem(tasks.TASK_MODULES, "question_answering")
    config = compile_config()
    raw = json.loads(config.read_text())
    raw["task"] = "question_answering"
    config.write_text(json.dumps(raw))
    code = main(["--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    assert "does not support task 'question_answering' yet (supported: " in err
    supported = err.split("(supported: ")[1].split(")")[0].split(", ")
    assert "text_classification" in supported and "question_answering" not in supported
    assert "Traceback" not in err


def test_runtime_does_not_import_compiler_templates(compile_config) -> None:
    import subprocess

    config = compile_config()
    code = (
        "import sys\n"
        "from ftc.runtime.config import load_config\n"
        f"load_config({str(config)!r})\n"
        "import ftc.runtime.trainer, ftc.runtime.tasks.text_classification\n"
        "bad = [m for m in ('jinja2', 'typer', 'ftc.compiler.render', 'ftc.cli') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_yaml_11_booleans_stay_words(compile_config, tmp_path: Path) -> None:
    cfg = load_config(compile_config(), [Override("evaluation_strategy", "no"), Override("apply_lora", "True")], cwd=tmp_path)
    assert cfg.spec.evaluation.evaluation_strategy == "no"
    assert cfg.spec.lora.apply_lora is True
    with pytest.raises(UsageError, match="--apply_lora yes: .*true or false"):
        load_config(compile_config(), [Override("apply_lora", "yes")], cwd=tmp_path)
