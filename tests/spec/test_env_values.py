"""env.vars values: `$NAME` and `${NAME}` expand at run time on every target; any other `$` is refused (FTC147)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftc.compiler.build import compile_spec, load_resolved
from ftc.spec import env_values
from ftc.spec.rules import run_rules

VALUES = [
    "/opt/amazon/efa/lib:$LD_LIBRARY_PATH",
    "${HOME}/cache",
    "a\"b`c\\d ${FTC_UNSET_FOR_TEST}x $FTC_SET_FOR_TEST.y",
    "plain 'quoted' text",
    "new\nline and ${lower_case}",
]
ENVIRON = {"LD_LIBRARY_PATH": "/usr/lib", "HOME": "/home/u", "FTC_SET_FOR_TEST": "set", "lower_case": "lc"}


@pytest.mark.parametrize("value", VALUES)
def test_bash_word_expands_like_expand(value: str) -> None:
    """What bash makes of the generated word (under set -u) is what `expand` says, unset names empty."""
    script = f"set -eu\nprintf %s {env_values.to_bash(value)}"
    env = {"PATH": os.environ["PATH"], **ENVIRON}
    out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out == env_values.expand(value, ENVIRON)


def test_expand_and_braced() -> None:
    value = "/x:$A:${B}:$C_1"
    assert env_values.references(value) == ["A", "B", "C_1"]
    assert env_values.expand(value, {"A": "1", "B": "2"}) == "/x:1:2:"
    assert env_values.braced(value) == "/x:${A}:${B}:${C_1}"


@pytest.mark.parametrize("value", ["cost $5", "a $ b", "trailing$", "${not closed", "$$HOME", "${A-b}"])
def test_a_stray_dollar_is_refused(value: str, tmp_path: Path) -> None:
    assert env_values.problem(value)
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "task: causal_lm\nmodel: /m\ndata: {train_file_path: /t.jsonl}\nenv:\n  vars:\n    A: " + repr(value) + "\n"
    )
    findings = [f for f in run_rules(load_resolved(spec)) if f.rule == "FTC147"]
    assert [(f.key, f.severity) for f in findings] == [("env.vars.A", "error")]


def test_references_are_not_refused() -> None:
    assert all(env_values.problem(v) is None for v in VALUES)


def test_local_run_script_expands_references(tmp_path: Path) -> None:
    """run.sh exports env.vars with their references expanded in the environment it starts in."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "task: causal_lm\nmodel: /m\ndata: {train_file_path: /t.jsonl}\n"
        "env:\n  vars:\n    FTC_LIB: '/opt/efa/lib:$FTC_LIB'\n    FTC_UNSET: '${FTC_NOT_SET_ANYWHERE}-x'\n"
    )
    (folder,) = compile_spec(spec, ["local"], tmp_path / "build")
    show = tmp_path / "show.py"
    show.write_text("import os\nprint(os.environ['FTC_LIB'] + '|' + os.environ['FTC_UNSET'])\n")
    env = {**os.environ, "FTC_LIB": "/usr/lib", "FTC_PYTHON": str(tmp_path / "python")}
    env.pop("FTC_NOT_SET_ANYWHERE", None)
    # The run script execs "$FTC_PYTHON" <runtime args>: a Python that prints the two variables instead.
    (tmp_path / "python").write_text(f"#!/bin/sh\nexec {sys.executable} {show}\n")
    (tmp_path / "python").chmod(0o755)
    out = subprocess.run(["bash", str(folder / "run.sh")], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "/opt/efa/lib:/usr/lib|-x"
