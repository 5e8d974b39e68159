"""`ftc docs --source TOOL`: the committed docs/import pages are the command's output, and each page names
every name its importer reads, beside keys the spec has, with ftc's defaults as the schema states them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ftc.backends.registry  # noqa: F401  (the schema has the targets' sections)
from ftc.cli.app import app
from ftc.importers import anyscale, axolotl, azureml, llama_recipes
from ftc.importers.base import ftc_defaults
from ftc.importers.docs import PAGES, default_rows, name_rows, render_source_docs
from ftc.spec.docs import default_value, iter_params

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
CODE = re.compile(r"`([^`]+)`")


def _names(source: str) -> set[str]:
    return {row[0].strip("`") for row in name_rows(source)}


@pytest.mark.parametrize("source", PAGES)
def test_committed_page_is_the_commands_output(source: str) -> None:
    result = runner.invoke(app, ["docs", "--source", source])
    assert result.exit_code == 0, result.output
    committed = (ROOT / "docs" / "import" / f"{source}.md").read_text(encoding="utf-8")
    assert committed == result.stdout, f"docs/import/{source}.md is out of date: run `ftc docs --source {source}`"


def test_unknown_source_is_refused() -> None:
    result = runner.invoke(app, ["docs", "--source", "torchtune"])
    assert result.exit_code == 2
    assert "unknown source 'torchtune'; sources: anyscale, llama-recipes, axolotl, azureml" in result.output


def test_every_name_each_importer_reads_is_on_its_page() -> None:
    expected = {
        "anyscale": {*anyscale.DIRECT, *(f"lora_config.{n}" for n in anyscale.LORA_DIRECT), *anyscale.NO_EQUIVALENT,
                     "task", "lr_scheduler_type", "padding", "lora_config", "deepspeed", "num_devices"},
        "llama-recipes": {*llama_recipes.TRAIN, *llama_recipes.NO_EQUIVALENT, "quantization", "peft_method"},
        "axolotl": {*axolotl.DIRECT, *axolotl.LORA_DIRECT, *axolotl.NO_EQUIVALENT, *axolotl.HANDLERS,
                    *axolotl.HANDLED_ELSEWHERE, "adapter"},
        "azureml": {*azureml.COMPONENT_DEFAULTS, *azureml.RENAMED, *azureml.NO_EQUIVALENT,
                    *azureml.INPUTS_WITHOUT_DEFAULT, "doc_stride", "n_best_size"},
    }
    for source, names in expected.items():
        assert names <= _names(source), f"{source}: {sorted(names - _names(source))} missing from its page"


@pytest.mark.parametrize("source", PAGES)
def test_every_ftc_key_on_a_page_is_a_spec_key(source: str) -> None:
    spec_keys = {param.key for param in iter_params()}
    shown = {key for row in name_rows(source) for key in CODE.findall(row[1])}
    assert shown, source
    unknown = {key for key in shown if key not in spec_keys and not key.endswith(".*")}
    assert not unknown, f"{source}: not keys of the spec: {sorted(unknown)}"
    module = {"anyscale": anyscale, "llama-recipes": llama_recipes, "axolotl": axolotl, "azureml": azureml}[source]
    assert all(name in _names(source) for name in getattr(module, "CONVERTED", {}))


def test_defaults_are_the_schemas_and_only_those_that_differ() -> None:
    rows = {row[0].strip("`"): row for row in default_rows("axolotl")}
    assert set(rows) == {"lr_scheduler", "output_dir", "sequence_len"}
    schema = {param.key: default_value(param, "causal_lm") for param in iter_params()}
    assert rows["sequence_len"][1:] == ("`512`", f"`{schema['data.max_seq_length']}` (`data.max_seq_length`)")
    assert schema["data.max_seq_length"] != 512
    assert ftc_defaults("causal_lm") == schema
    anyscale_rows = {row[0].strip("`") for row in default_rows("anyscale")}
    assert "padding" not in anyscale_rows  # longest is pad_to_max_length false, as ftc's default
    assert "lora_config.lora_dropout" not in anyscale_rows  # 0.05 both
    assert {"flash_attention_2", "lr_scheduler_type", "num_warmup_steps", "output_dir"} <= anyscale_rows
    llama_rows = {row[0].strip("`") for row in default_rows("llama-recipes")}
    assert {"gradient_clipping", "num_workers_dataloader"} <= llama_rows
    assert "context_length" not in llama_rows  # 4096 both
    azureml_rows = {row[0].strip("`") for row in default_rows("azureml")}
    assert {"learning_rate", "logging_steps", "lora_alpha", "precision"} <= azureml_rows
    assert "eval_accumulation_steps" not in azureml_rows  # the component's -1 is "None", as ftc's causal_lm default


def test_pages_need_no_training_packages() -> None:
    code = (
        "import sys; import ftc.backends.registry; from ftc.importers.docs import PAGES, render_source_docs; "
        "[render_source_docs(s) for s in PAGES]; "
        "print(sorted(m for m in ('torch', 'transformers', 'ray', 'azure') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_unknown_source_raises() -> None:
    with pytest.raises(KeyError, match="unknown source"):
        render_source_docs("torchtune")
