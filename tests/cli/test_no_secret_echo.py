"""A secret given with `--set` is masked everywhere a command shows it, the override's location included."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftc.cli.app import app

from tests.conftest import MINIMAL

TOKEN = "hf_" + "A1b2C3d4E5" * 4
PASSWORD = "s3cretPassw0rd"
OVERRIDES = {
    "a value lint flags": f"description={TOKEN}",
    "a value of the wrong type": f"training.seed={TOKEN}",
    "an unknown key": f"{TOKEN}=1",
    "no equals sign": TOKEN,
    "a URL password": f"tracking.tracking_uri=http://u:{PASSWORD}@127.0.0.1:9/",
}
COMMANDS = {
    "lint text": ["lint", "{spec}"],
    "lint json": ["lint", "{spec}", "-f", "json"],
    "lint github": ["lint", "{spec}", "-f", "github"],
    "lint sarif": ["lint", "{spec}", "-f", "sarif"],
    "explain": ["explain", "{spec}"],
    "compile": ["compile", "{spec}", "-t", "all", "-o", "{out}"],
}


@pytest.mark.parametrize("override", OVERRIDES.values(), ids=OVERRIDES.keys())
@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_a_secret_in_set_is_never_echoed(
    command: list[str], override: str, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    args = [a.format(spec=write_spec(MINIMAL), out=tmp_path / "b") for a in command]
    result = CliRunner().invoke(app, [*args, "--set", override])
    assert TOKEN not in result.output and PASSWORD not in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exit_code != 0 or command[0] == "explain", result.output  # explain shows valid values, masked
    assert not (tmp_path / "b").exists()


def test_the_sarif_location_of_a_set_secret_is_masked(write_spec: Callable[..., Path]) -> None:
    result = CliRunner().invoke(app, ["lint", str(write_spec(MINIMAL)), "-f", "sarif", "--set", f"description={TOKEN}"])
    (finding,) = json.loads(result.output)["runs"][0]["results"]
    assert finding["ruleId"] == "FTC106"
    assert finding["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "--set description=***"


def test_explain_names_a_masked_set_as_the_source(write_spec: Callable[..., Path]) -> None:
    result = CliRunner().invoke(app, ["explain", str(write_spec(MINIMAL)), "--set", f"tracking.experiment_name={TOKEN}"])
    assert result.exit_code == 0 and TOKEN not in result.output
    assert '"***"' in result.output and "# --set tracking.experiment_name=***" in result.output
