"""Fuzzing lint and compile with mutated specs: every failure is a clean error, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ftc.cli.app import app
from ftc.cli.lint_report import lint_file
from ftc.compiler.build import compile_spec
from ftc.errors import FtcError, UnreadableSpec
from ftc.spec.loader import parse_spec_text

from tests.golden_cases import golden_specs

BASES = [yaml.safe_load(p.read_text()) for p in golden_specs()]

scalars = st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.floats() | st.text(max_size=40)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3), max_leaves=6
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    return out


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(1, 4))):
        candidates = paths(spec)
        path = draw(st.sampled_from(candidates))
        parent = spec
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent.get(path[-1]), dict):
            parent[path[-1]][draw(st.text(min_size=1, max_size=15))] = draw(values)
        if not spec:
            break
    return spec


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(spec=mutated_specs())
def test_mutated_specs_lint_and_compile_cleanly(spec: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(spec))
    lint_file(path, [])  # findings, never an exception
    try:
        compile_spec(path, ["all"], tmp_path / "build")
    except FtcError:
        pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=mutated_specs())
def test_cli_exit_codes_are_0_1_or_2(spec: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(spec))
    runner = CliRunner()
    for args in (["lint", str(path)], ["compile", str(path), "-t", "all", "-o", str(tmp_path / "b")]):
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1, 2), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_arbitrary_bytes_parse_or_refuse(raw: bytes) -> None:
    try:
        parse_spec_text(raw, "fuzz.yaml")
    except UnreadableSpec:
        pass
