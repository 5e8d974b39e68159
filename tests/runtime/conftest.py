"""Fixtures of the runtime tests: a tiny model and data set built once, specs compiled on the fly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]

# Trains the tiny model to 100% validation accuracy in 120 steps (about 2 s on 2 cores).
TINY_SPEC = """\
task: text_classification
model: ./models/tiny
data:
  train_file_path: data/train.jsonl
  validation_file_path: data/validation.jsonl
  max_seq_length: 32
training:
  num_train_epochs: 8
  per_device_train_batch_size: 16
  per_device_eval_batch_size: 64
  seed: 0
optimizer:
  optim: adamw_torch
  learning_rate: 0.002
  warmup_steps: 10
evaluation:
  metric_for_best_model: accuracy
checkpointing:
  output_dir: out
  save_total_limit: 1
"""


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.runtime.tiny import make_tiny_classifier

    return make_tiny_classifier(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.runtime.tiny import make_classification_data

    return make_classification_data(tmp_path_factory.mktemp("data"), n_train=240, n_val=60, seed=0)


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path, tiny_data: tuple[Path, Path]) -> Path:
    """A spec folder with models/tiny (a link to the session's tiny model) and data/{train,validation}.jsonl."""
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    (root / "models" / "tiny").symlink_to(tiny_model, target_is_directory=True)
    (root / "data").mkdir()
    for src in tiny_data:
        (root / "data" / src.name).write_bytes(src.read_bytes())
    return root


@pytest.fixture
def compile_config(project: Path) -> Callable[..., Path]:
    """Write a spec into the project folder, compile it for the local target, return ftc.resolved.json."""

    def compile_(spec: str = TINY_SPEC, name: str = "spec.yaml", build: str = "build") -> Path:
        from ftc.compiler.build import compile_spec

        spec_path = project / name
        spec_path.write_text(textwrap.dedent(spec))
        compile_spec(spec_path, ["local"], project / build)
        return project / build / "local" / "ftc.resolved.json"

    return compile_


def run_module(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m ftc.runtime ARGS` in a fresh process with this interpreter and this checkout."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return subprocess.run(
        [sys.executable, "-m", "ftc.runtime", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def run_inprocess(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    """Call the runtime's main() in this process (imports paid once); returns (exit code, stdout, stderr)."""
    from ftc.runtime.main import main

    def run(config: Path, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
        monkeypatch.delenv("RANK", raising=False)
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        code = main(["--config", str(config), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
