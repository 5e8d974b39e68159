"""Odd files and paths never crash lint or compile: the data-aware rules treat them as unreachable data."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ftc.cli.app import app
from ftc.cli.lint_report import lint_file
from ftc.spec.peek import count_lines, local_path, model_config, model_family, peek_data, read_json

runner = CliRunner()
DEEP = "[" * 200_000 + "]" * 200_000
SPEC = "task: text_classification\nmodel: ./model\ndata:\n  train_file_path: {train}\n"


def _lint_and_compile(spec: Path, out: Path) -> tuple[list[str], int]:
    """The rule ids lint finds, and the exit code of compiling for every target; neither may raise."""
    rules = [f.rule for f in lint_file(spec, [], ["all"]).findings]
    result = runner.invoke(app, ["compile", str(spec), "-t", "local", "-o", str(out)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return rules, result.exit_code


@pytest.mark.parametrize(
    "train",
    [
        "a" * 300 + ".jsonl",  # longer than a file name may be
        "~nosuchuser_zz/train.jsonl",  # expanduser cannot find the user
        '"data/\\x00.jsonl"',  # YAML turns \x00 into a NUL byte: no valid path
    ],
    ids=["name-too-long", "unknown-user", "nul-byte"],
)
def test_an_impossible_path_is_unreachable_data(train: str, write_spec: Callable[..., Path], tmp_path: Path) -> None:
    rules, _ = _lint_and_compile(write_spec(SPEC.format(train=train)), tmp_path / "build")
    assert not {r for r in rules if r.startswith("FTC13")}
    assert local_path(tmp_path, yaml.safe_load(f"v: {train}")["v"]) is None


def test_deeply_nested_json_is_unreadable(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "deep.jsonl").write_text(DEEP + "\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(DEEP)
    spec = write_spec(SPEC.format(train="deep.jsonl") + "lora:\n  apply_lora: true\n")
    _lint_and_compile(spec, tmp_path / "build")
    assert peek_data(tmp_path / "deep.jsonl") is None
    assert model_config(tmp_path, "model") is None and read_json(tmp_path / "model" / "config.json") is None


def test_a_model_type_that_is_not_a_string_is_no_family(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": ["x"]}))
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    spec = write_spec(SPEC.format(train="train.jsonl") + "lora:\n  apply_lora: true\ndeepspeed:\n  apply_deepspeed: true\n")
    rules, _ = _lint_and_compile(spec, tmp_path / "build")
    assert model_family(tmp_path, "model") is None
    assert "FTC125" not in rules


def test_a_csv_row_longer_than_its_header_lists_only_named_columns(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("text,label\na,x,surplus\nb,y\n")
    spec = write_spec(SPEC.format(train="train.csv") + "  sentence1_key: nosuch\n")
    findings = lint_file(spec, []).findings
    (missing,) = [f for f in findings if f.rule == "FTC130"]
    assert missing.message.endswith("(columns: label, text)")


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_an_unreadable_validation_file_is_unreachable_data(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(
        "task: text_classification\nmodel: ./model\ndata:\n  train_file_path: /proc/self/mem\n"
        "  validation_file_path: /proc/self/mem\nevaluation:\n  evaluation_strategy: steps\n  eval_steps: 1\n"
    )
    rules, _ = _lint_and_compile(spec, tmp_path / "build")
    assert "FTC133" not in rules
    assert count_lines(Path("/proc/self/mem"), 10) is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission_is_unreachable_data(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a"}\n')
    path.chmod(0)
    assert peek_data(path) is None and count_lines(path, 10) is None


def test_a_folder_or_fifo_named_as_json_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()
    os.mkfifo(tmp_path / "fifo.json")
    assert read_json(tmp_path / "config.json") is None
    assert read_json(tmp_path / "fifo.json") is None  # would block if opened
