"""`ftc explain`: one aligned line per parameter with its source, and no secret in any of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ftc.cli.explain import explain_lines
from ftc.compiler.build import load_resolved

from tests.conftest import MINIMAL

TOKEN = "hf_" + "abcdefghijklmnopqrstuvwxyz0123456789AB"


def test_every_parameter_and_derived_value_has_a_line(write_spec: Callable[..., Path]) -> None:
    resolved = load_resolved(write_spec(MINIMAL + "optimizer:\n  learning_rate: 0.5\n"))
    head, *lines = explain_lines(resolved)
    assert head.startswith("# text_classification_finetune: task text_classification, spec ")
    keys = [line.split(" = ")[0] for line in lines]
    assert keys == [*resolved.sources, *(f"derived.{k}" for k in resolved.derived)]
    (lr,) = [line for line in lines if line.startswith("optimizer.learning_rate ")]
    (seed,) = [line for line in lines if line.startswith("training.seed ")]
    assert "= 0.5 " in lr and lr.endswith(":7:3") and seed.endswith("# default")
    assert lr.index(" # ") == seed.index(" # ")  # aligned


def test_a_token_in_the_name_is_masked_in_the_header_and_derived_name(write_spec: Callable[..., Path]) -> None:
    lines = explain_lines(load_resolved(write_spec(MINIMAL + f"name: {TOKEN}\n")))
    assert not [line for line in lines if TOKEN in line]
    assert lines[0].startswith("# ***: task text_classification")
    (name,) = [line for line in lines if line.startswith("derived.name ")]
    assert '"***"' in name


def test_a_token_in_a_source_or_value_is_masked(write_spec: Callable[..., Path]) -> None:
    spec = write_spec(MINIMAL + f"description: 'token {TOKEN}'\nenv:\n  vars:\n    X: 'https://u:{TOKEN}@host/x'\n")
    lines = explain_lines(load_resolved(spec, ["training.seed=7"]))
    assert not [line for line in lines if TOKEN in line]
    (env,) = [line for line in lines if line.startswith("env.vars ")]
    assert "https://***@host/x" in env
