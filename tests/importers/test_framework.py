"""The `ftc import` framework: the spec writer, the choice of importer, and the command's output and exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ftc.cli.app import app
from ftc.importers import ImportFailed, Imported, find_importer
from ftc.importers.writer import spec_text
from ftc.spec.loader import parse_spec_text

from tests.test_layers import lint_imports

ANYSCALE = Path(__file__).parent / "fixtures" / "anyscale"
runner = CliRunner()


def _imported() -> Imported:
    """Settings given out of the spec's order, with values YAML would misread unquoted."""
    imported = Imported("src.yaml", "Tool")
    imported.set(("optimizer", "learning_rate"), 5e-6, "--lr")
    imported.set(("data", "train_file_path"), "yes", "train: yes")
    imported.set(("task",), "causal_lm", "Tool default")
    imported.set(("model", "model_selector_output"), "org/model: v2", "model_id")
    imported.set(("targets", "ray", "worker_resources"), {"accelerator_type:A10G": 0.001}, "worker_resources")
    imported.set(("data", "validation_file_path"), "# not a comment", "valid")
    imported.skip("prompt_format", "line one\nline two", "no equivalent\nat all")
    return imported


def test_the_writer_orders_quotes_and_comments_every_line() -> None:
    text = spec_text(_imported())
    lines = text.splitlines()
    assert lines[1:5] == [
        "task: causal_lm  # Tool default",
        "model:",
        "  model_selector_output: 'org/model: v2'  # model_id",
        "data:",
    ]
    assert lines[5:7] == ["  train_file_path: 'yes'  # train: yes", "  validation_file_path: '# not a comment'  # valid"]
    assert lines[7:9] == ["optimizer:", "  learning_rate: 5.0e-06  # --lr"]
    assert lines[-2] == "# Not imported: Tool settings with no ftc equivalent."
    assert lines[-1] == '#   prompt_format: "line one\\nline two"  -- no equivalent at all'
    data = yaml.safe_load(text)
    assert data["data"] == {"train_file_path": "yes", "validation_file_path": "# not a comment"}
    assert data["optimizer"]["learning_rate"] == 5e-6
    assert data["targets"]["ray"]["worker_resources"] == {"accelerator_type:A10G": 0.001}
    assert spec_text(_imported()) == text


def test_the_writer_text_loads_as_a_spec_with_each_key_on_its_own_line() -> None:
    doc = parse_spec_text(spec_text(_imported()).encode(), "x.yaml")
    lines = [doc.positions[key].line for key in [("task",), ("data", "train_file_path"), ("optimizer", "learning_rate")]]
    assert len(set(lines)) == 3


def test_a_key_set_twice_is_refused() -> None:
    imported = _imported()
    with pytest.raises(ValueError, match="optimizer.learning_rate is set twice"):
        imported.set(("optimizer", "learning_rate"), 1e-4, "again")


def test_the_importer_is_found_by_name_or_by_the_file(tmp_path: Path) -> None:
    llmforge = ANYSCALE / "llama-3-70b-full.yaml"
    assert find_importer(llmforge, None).name == "anyscale"
    assert find_importer(llmforge, "anyscale").name == "anyscale"
    unknown = tmp_path / "other.yaml"
    unknown.write_text("epochs: 3\n")
    with pytest.raises(ImportFailed, match=r"other.yaml: does not say which tool it is for; give --from"):
        find_importer(unknown, None)
    with pytest.raises(ImportFailed, match="'ludwig' is not a source; use one of anyscale, llama-recipes"):
        find_importer(unknown, "ludwig")


def test_import_prints_the_spec_and_warns_on_stderr() -> None:
    result = runner.invoke(app, ["import", str(ANYSCALE / "llama-3-70b-full.yaml")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# Imported by `ftc import` from ")
    assert "warning: " not in result.stdout
    assert "dataset_size_scaling_factor: not imported: an internal LLMForge flag" in result.stderr


def test_import_writes_the_file_that_lints_clean(tmp_path: Path) -> None:
    out = tmp_path / "specs" / "spec.yaml"
    result = runner.invoke(app, ["import", str(ANYSCALE / "llama-3-8b-lora-4xA10.yaml"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("# Imported by `ftc import`")
    lint = runner.invoke(app, ["lint", str(out), "-t", "all"])
    assert lint.exit_code == 0, lint.output
    assert "0 error(s)" in lint.stdout


def _llmforge(tmp_path: Path, extra: str) -> Path:
    source = tmp_path / "job.yaml"
    shutil.copytree(ANYSCALE / "deepspeed_configs", tmp_path / "deepspeed_configs")
    source.write_text((ANYSCALE / "llama-3-8b-lora-4xA10.yaml").read_text() + extra)
    return source


def test_a_spec_that_fails_lint_is_not_written(tmp_path: Path) -> None:
    source = _llmforge(tmp_path, "num_epochs: 0\n")  # a repeated key: the last one counts, as in yaml.safe_load
    out = tmp_path / "spec.yaml"
    result = runner.invoke(app, ["import", str(source), "-o", str(out)])
    assert result.exit_code == 1
    assert "training.num_train_epochs" in result.stderr
    assert not out.exists()


def test_a_value_the_tool_refuses_exits_2_naming_file_line_and_key(tmp_path: Path) -> None:
    source = _llmforge(tmp_path, "padding: do_not_pad\n")
    out = tmp_path / "spec.yaml"
    result = runner.invoke(app, ["import", str(source), "-o", str(out)])
    assert result.exit_code == 2
    line = len(source.read_text().splitlines())
    assert f"job.yaml:{line}:1: padding: 'do_not_pad' is refused by Anyscale LLMForge; it accepts longest, max_length" in (
        result.stderr
    )
    assert not out.exists()


def test_an_unknown_source_exits_2() -> None:
    result = runner.invoke(app, ["import", str(ANYSCALE / "llama-3-70b-full.yaml"), "--from", "ludwig"])
    assert result.exit_code == 2
    assert "--from: 'ludwig' is not a source" in result.stderr


def test_a_source_that_multiplies_through_aliases_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "bomb.yaml"
    rows = ["model_id: m", "train_path: t", "a: &a [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]" for p, n in zip("abcde", "bcdef")]
    source.write_text("\n".join(rows) + "\n")
    with pytest.raises(ImportFailed, match="bomb.yaml: nests deeper than 40 levels or expands to over 100000 values"):
        find_importer(source, None).convert(source)


def test_a_source_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "list.yaml"
    source.write_text("- model_id: m\n")
    with pytest.raises(ImportFailed, match="list.yaml: must be a YAML mapping of settings"):
        find_importer(source, "anyscale").convert(source)


def test_importing_loads_no_training_library() -> None:
    """`ftc import` starts fast: no torch, transformers, ray or azure."""
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom ftc.cli.app import app\n"
        f"result = CliRunner().invoke(app, ['import', {str(ANYSCALE / 'llama-3-70b-full.yaml')!r}])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'ray', 'azure', 'datasets'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_the_contracts_keep_importers_off_the_compiler(tmp_path: Path) -> None:
    """An importer that imports the compiler breaks pyproject.toml's contracts (the layers allow it: cli >
    importers > compiler; the forbidden contract does not)."""
    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "ftc", tmp_path / "ftc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    module = tmp_path / "ftc" / "importers" / "writer.py"
    module.write_text(module.read_text() + "\nimport ftc.compiler.build  # a forbidden import\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "ftc.importers.writer -> ftc.compiler.build" in result.stdout
