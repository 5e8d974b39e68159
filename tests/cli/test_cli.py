"""The `ftc` command line: exit codes, output formats, and a fast start without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftc.backends.registry import backends
from ftc.cli.app import app
from ftc.spec.schema import SCHEMA_PATH, schema_text

from tests.conftest import MINIMAL

runner = CliRunner()


def test_compile_all_targets(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["compile", str(write_spec()), "--target", "all", "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "local/: ftc.resolved.json, manifest.json, run.sh" in result.output


def test_compile_error_is_one_clean_paragraph(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(MINIMAL + "lora:\n  lora_rr: 4\n")
    result = runner.invoke(app, ["compile", str(spec), "-t", "local", "-o", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert "spec.yaml:7:3: lora.lora_rr: unknown key; did you mean lora_r?" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "b").exists()


def test_unreadable_spec_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compile", str(tmp_path / "missing.yaml"), "-t", "local", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "cannot be read" in result.output


def lint(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["lint", *args])
    return result.exit_code, result.output


def test_lint_exit_codes(write_spec: Callable[..., Path]) -> None:
    clean = write_spec()
    warning = write_spec(MINIMAL + "lora:\n  merge_lora_weights: false\n  apply_lora: false\n", name="warn.yaml")
    error = write_spec(MINIMAL + "ort:\n  apply_ort: true\n", name="err.yaml")
    unreadable = write_spec("task: [", name="broken.yaml")
    assert lint(str(clean))[0] == 0
    code, out = lint(str(warning))
    assert code == 0 and "warn.yaml:7:3: FTC102 warning: lora.merge_lora_weights: has no effect" in out
    assert lint("--strict", str(warning))[0] == 1
    code, out = lint(str(clean), str(error))
    assert code == 1 and "err.yaml:7:3: FTC107 error: ort.apply_ort: ONNX Runtime training cannot run" in out
    assert lint(str(clean), str(unreadable))[0] == 2


def test_lint_json_and_github(write_spec: Callable[..., Path]) -> None:
    spec = write_spec(MINIMAL + "evaluation:\n  evaluation_strategy: steps\nbogus: 1\n")
    code, out = lint("--format", "json", str(spec))
    findings = json.loads(out)["findings"]
    assert code == 1
    assert findings == [
        {
            "file": str(spec),
            "line": 8,
            "column": 1,
            "rule": "FTC001",
            "severity": "error",
            "key": "bogus",
            "message": "unknown key",
        }
    ] or findings[0]["key"] == "bogus"
    spec = write_spec(MINIMAL + "evaluation:\n  evaluation_strategy: steps\n", name="steps.yaml")
    code, out = lint("--format", "github", str(spec))
    assert code == 0
    assert out.startswith(f"::warning file={spec},line=7,col=3,title=FTC101::evaluation.evaluation_strategy: is steps")


def test_lint_flags_literal_tokens_and_explain_masks_them(write_spec: Callable[..., Path]) -> None:
    token = "hf_" + "a1B2c3D4" * 5
    spec = write_spec(MINIMAL + f"env:\n  vars:\n    TOKEN: {token}\n")
    code, out = lint(str(spec))
    assert code == 1 and "FTC106 error: env.vars.TOKEN: looks like a literal token" in out
    assert token not in out
    result = runner.invoke(app, ["explain", str(spec)])
    assert result.exit_code == 0 and token not in result.output and "***" in result.output


def test_lint_ignore_silences_a_rule(write_spec: Callable[..., Path]) -> None:
    spec = write_spec(MINIMAL + "lora:\n  merge_lora_weights: false\n  apply_lora: false\nlint:\n  ignore:\n    FTC102: kept for the azureml target\n")
    code, out = lint("--strict", str(spec))
    assert code == 0 and "FTC102" not in out


def test_explain_shows_sources(write_spec: Callable[..., Path]) -> None:
    spec = write_spec(MINIMAL.replace("text_classification", "causal_lm") + "optimizer:\n  lr: 0.5\n")
    result = runner.invoke(app, ["explain", str(spec), "--set", "training.num_train_epochs=7"])
    lines = {line.split(" = ")[0]: line for line in result.output.splitlines()}
    assert lines["optimizer.learning_rate"].endswith("# " + f"{spec}:7:3")
    assert "0.5" in lines["optimizer.learning_rate"]
    assert lines["training.num_train_epochs"].endswith("# --set training.num_train_epochs=7")
    assert lines["lora.lora_alpha"].endswith("# default for task causal_lm")
    assert lines["optimizer.adam_beta1"].endswith("# default")


def test_schema_is_committed_and_fresh() -> None:
    assert SCHEMA_PATH.read_text() == schema_text(), "ftc/spec/schema.json drifted: run `ftc schema > ftc/spec/schema.json`"


def test_schema_validates_specs(write_spec: Callable[..., Path]) -> None:
    import jsonschema
    import yaml

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.validate(yaml.safe_load(MINIMAL + "lora:\n  apply_lora: 'true'\n"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load(MINIMAL + "lora:\n  lora_rr: 4\n"), schema)


def test_targets_and_version() -> None:
    listed = [line.split()[0] for line in runner.invoke(app, ["targets"]).output.splitlines()]
    assert listed == sorted(backends()) and "local" in listed
    assert runner.invoke(app, ["--version"]).output.startswith("ftc ")


HEAVY = ("torch", "transformers", "ray", "azure", "deepspeed", "peft", "mlflow", "datasets")


@pytest.mark.parametrize("command", [["compile", "-t", "all", "-o", "{out}"], ["lint"], ["explain"]])
def test_compile_and_lint_never_import_heavy_packages(
    write_spec: Callable[..., Path], tmp_path: Path, command: list[str]
) -> None:
    spec = write_spec()
    args = [a.replace("{out}", str(tmp_path / "b")) for a in command[:1]] + [str(spec)] + [
        a.replace("{out}", str(tmp_path / "b")) for a in command[1:]
    ]
    probe = (
        "import sys\nfrom ftc.cli.app import app\n"
        f"try:\n    app({args!r})\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)
