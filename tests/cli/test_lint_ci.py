"""Lint as CI uses it: SARIF for code scanning, the pre-commit hook, the generated rules page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml
from typer.testing import CliRunner

from ftc.cli.app import app
from ftc.spec.docs import render_rules

from tests.conftest import MINIMAL

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_sarif_report(write_spec: Callable[..., Path]) -> None:
    spec = write_spec(MINIMAL + "ort:\n  apply_ort: true\nlora:\n  lora_r: 4\n  apply_lora: false\n")
    result = runner.invoke(app, ["lint", "--format", "sarif", str(spec)])
    assert result.exit_code == 1
    sarif = json.loads(result.output)
    run = sarif["runs"][0]
    assert sarif["version"] == "2.1.0" and run["tool"]["driver"]["name"] == "ftc"
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["FTC102", "FTC107"]
    by_rule = {r["ruleId"]: r for r in run["results"]}
    assert by_rule["FTC107"]["level"] == "error" and by_rule["FTC102"]["level"] == "warning"
    region = by_rule["FTC107"]["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 7, "startColumn": 3}
    for r in run["results"]:
        assert run["tool"]["driver"]["rules"][r["ruleIndex"]]["id"] == r["ruleId"]


def test_sarif_describes_target_rules(write_spec: Callable[..., Path]) -> None:
    spec = write_spec(MINIMAL + "resources:\n  nodes: 2\n")
    result = runner.invoke(app, ["lint", "--format", "sarif", "--target", "local", str(spec)])
    (rule,) = json.loads(result.output)["runs"][0]["tool"]["driver"]["rules"]
    assert rule["id"] == "FTC201" and rule["name"] != "FTC201" and rule["fullDescription"]["text"] != "FTC201"
    assert rule["defaultConfiguration"]["level"] == "error"


def test_rules_page_is_fresh() -> None:
    assert (ROOT / "docs" / "rules.md").read_text() == render_rules(), "run `ftc docs --rules > docs/rules.md`"


def test_pre_commit_hook_runs_like_pre_commit(tmp_path: Path) -> None:
    """pre-commit runs `entry` + `args` + the staged files matching `files`; do exactly that."""
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    specs = tmp_path / "specs"
    specs.mkdir()
    good, bad = specs / "good.yaml", specs / "bad.yaml"
    good.write_text(MINIMAL)
    bad.write_text(MINIMAL + "lora:\n  lora_rr: 4\n")
    staged = [str(p.relative_to(tmp_path)) for p in (good, bad)] + ["README.md", "other/config.yaml"]
    matched = [f for f in staged if re.search(hook["files"], f)]
    assert matched == ["specs/good.yaml", "specs/bad.yaml"]
    ftc = shutil.which("ftc", path=str(Path(sys.executable).parent))
    assert ftc, "the ftc console script is installed next to the interpreter"
    entry = [ftc, *hook["entry"].split()[1:], *hook.get("args", [])]
    ok = subprocess.run([*entry, matched[0]], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = subprocess.run([*entry, *matched], cwd=tmp_path, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "specs/bad.yaml:7:3: FTC001 error: lora.lora_rr: unknown key; did you mean lora_r?" in failed.stdout
