"""The compile/runtime contract: the runtime's argument grammar, the versioned ftc.resolved.json, the derived
values both sides compute with one function, and a runtime that loads no compiler or backend module."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ftc import __version__
from ftc.contract import CONFIG_FORMAT, CONFIG_NAME, HELP, ArgumentError, config_problem, runtime_arguments
from ftc.spec.derived import Derived, derive, num_epochs, steps_per_epoch

LM_SPEC = """\
task: causal_lm
model: ./models/lm
data:
  train_file_path: data/train.jsonl
training:
  min_update_steps: 100
"""


@pytest.fixture
def compiled(write_spec: Callable[..., Path], tmp_path: Path) -> Callable[[str], Path]:
    """Compile a spec for the local target; return its ftc.resolved.json."""
    from ftc.compiler.build import compile_spec

    def compile_(text: str) -> Path:
        compile_spec(write_spec(text), ["local"], tmp_path / "build")
        return tmp_path / "build" / "local" / CONFIG_NAME

    return compile_


# --------------------------------------------------------------------------- the argument grammar


def test_runtime_arguments_forms() -> None:
    argv = ["--config", "c.json", "--lr", "1e-4", "--seed=3", "--apply_lora", "--local_rank=0", "--x", "-1", "-h"]
    assert list(runtime_arguments(argv)) == [
        ("config", "c.json"), ("lr", "1e-4"), ("seed", "3"), ("apply_lora", "true"), ("x", "-1"), (HELP, "true"),
    ]


@pytest.mark.parametrize("word", ["oops", "--", "-x"])
def test_runtime_arguments_refuse_other_words(word: str) -> None:
    with pytest.raises(ArgumentError, match=f"unexpected argument {word!r}"):
        list(runtime_arguments(["--lr", "1", word]))


def test_azureml_value_parser_has_a_public_home() -> None:
    from ftc.spec.arguments import argument_value

    assert argument_value("no", ("evaluation", "evaluation_strategy")) == "no"  # not YAML 1.1's false
    assert argument_value("q_proj, v_proj", ("lora", "target_modules")) == ["q_proj", "v_proj"]
    assert argument_value("0.5", ("optimizer", "learning_rate")) == 0.5


# --------------------------------------------------------------------------- the versioned config


def test_config_header_carries_the_format(compiled: Callable[[str], Path]) -> None:
    header = json.loads(compiled(LM_SPEC).read_text())["ftc"]
    assert header["format"] == CONFIG_FORMAT and header["version"] == __version__
    assert config_problem(header, __version__) is None


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"version": "0.0.9"}, "compiled by ftc 0.0.9 (config format 1), and this is ftc"),
        ({"format": CONFIG_FORMAT + 1}, f"(config format {CONFIG_FORMAT + 1}), and this is ftc {__version__}"),
        ({"format": None}, "(config format None)"),
    ],
)
def test_runtime_refuses_another_version_or_format(
    compiled: Callable[[str], Path], capsys: pytest.CaptureFixture[str], change: dict, says: str
) -> None:
    from ftc.runtime.main import main

    path = compiled(LM_SPEC)
    config = json.loads(path.read_text())
    config["ftc"] = {k: v for k, v in {**config["ftc"], **change}.items() if v is not None}
    path.write_text(json.dumps(config))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ftc.runtime: error: {path}: it was compiled by ")
    assert says in err
    assert "compile spec.yaml again with this ftc (ftc compile spec.yaml -t <target>)" in err
    if "version" in change:
        assert "run it with ftc 0.0.9 (pip install 'ftc==0.0.9')" in err


def test_runtime_refuses_a_config_without_header(compiled: Callable[[str], Path]) -> None:
    from ftc.runtime.config import load_config
    from ftc.runtime.errors import UsageError

    path = compiled(LM_SPEC)
    config = json.loads(path.read_text())
    del config["ftc"]
    path.write_text(json.dumps(config))
    with pytest.raises(UsageError, match=f"it has no 'ftc' header; compile the spec again with this ftc \\(ftc {__version__}\\)"):
        load_config(path, [])


def test_runtime_loads_no_compiler_or_backend_module(compiled: Callable[[str], Path]) -> None:
    path = compiled(LM_SPEC)
    code = (
        "import sys; from ftc.runtime.config import Override, load_config\n"
        f"cfg = load_config({str(path)!r}, [Override('lr', '1e-3')])\n"
        "assert cfg.spec.optimizer.learning_rate == 1e-3\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['ftc', 'compiler'], ['ftc', 'backends'], ['ftc', 'cli'])))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- derived values


def test_min_update_steps_stands_in_for_a_task_default_of_epochs(compiled: Callable[[str], Path]) -> None:
    """causal_lm's num_train_epochs default (3) is a default all the same: min_update_steps replaces it."""
    derived = json.loads(compiled(LM_SPEC).read_text())["derived"]
    assert derived["epochs_from_min_update_steps"] is True
    given = json.loads(compiled(LM_SPEC + "  num_train_epochs: 2\n").read_text())["derived"]
    assert given["epochs_from_min_update_steps"] is False


def test_runtime_derives_what_the_compiler_wrote(compiled: Callable[[str], Path]) -> None:
    from ftc.runtime.config import load_config

    path = compiled(LM_SPEC + "evaluation:\n  run_validation: false\n")
    cfg = load_config(path, [])
    written = json.loads(path.read_text())
    assert dict(cfg.derived) == written["derived"]
    assert cfg.spec.evaluation.evaluation_strategy == written["evaluation"]["evaluation_strategy"] == "no"
    assert cfg.spec.training.per_device_eval_batch_size == cfg.spec.training.per_device_train_batch_size


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"optim": "sgd"}, {"optim_fused_on_cuda": False, "eval_batch_from_train": True}),
        ({"per_device_eval_batch_size": "7"}, {"optim_fused_on_cuda": True, "eval_batch_from_train": False}),
        ({"num_train_epochs": "5"}, {"epochs_from_min_update_steps": False}),
        ({"metric_for_best_model": "accuracy"}, {"metric_greater_is_better": True}),
    ],
)
def test_command_line_derives_again(compiled: Callable[[str], Path], overrides: dict, expected: dict) -> None:
    from ftc.runtime.config import Override, load_config

    cfg = load_config(compiled(LM_SPEC), [Override(k, v) for k, v in overrides.items()])
    assert {k: cfg.derived[k] for k in expected} == expected


def test_min_update_steps_on_the_command_line_wins_unless_epochs_are_there_too(write_spec, tmp_path: Path) -> None:
    from ftc.compiler.build import compile_spec
    from ftc.runtime.config import Override, load_config

    compile_spec(write_spec(LM_SPEC.replace("  min_update_steps: 100\n", "  num_train_epochs: 2\n")), ["local"], tmp_path / "b")
    path = tmp_path / "b" / "local" / CONFIG_NAME
    assert load_config(path, [Override("min_update_steps", "40")]).derived.epochs_from_min_update_steps is True
    both = [Override("min_update_steps", "40"), Override("num_train_epochs", "4")]
    assert load_config(path, both).derived.epochs_from_min_update_steps is False


def test_derived_reads_as_a_mapping_without_the_other_tasks_flags(write_spec) -> None:
    from ftc.compiler.build import load_resolved

    r = load_resolved(write_spec())
    assert "optim_fused_on_cuda" not in r.derived and r.derived.get("eval_batch_from_train") is None
    assert list(r.derived) == [
        "name", "world_size", "effective_train_batch_size", "epochs_from_min_update_steps", "metric_greater_is_better",
    ]
    assert Derived.from_config(dict(r.derived)) == r.derived == derive(r.spec, set())


def test_steps_per_epoch_and_epochs() -> None:
    from ftc.spec.sections import TrainingSection

    tr = TrainingSection(per_device_train_batch_size=4, gradient_accumulation_steps=2, min_update_steps=25)
    assert steps_per_epoch(tr, 100, world_size=2) == 7  # ceil(ceil(100 / 8) / 2)
    assert steps_per_epoch(tr, 0, world_size=1) == 1
    stand_in = Derived("n", 2, 16, epochs_from_min_update_steps=True, metric_greater_is_better=False)
    assert num_epochs(tr, stand_in, 7) == 4  # ceil(25 / 7)
    assert num_epochs(tr, Derived("n", 2, 16, False, False), 7) == tr.num_train_epochs
