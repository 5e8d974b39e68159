"""Starting models where users keep them: MLflow-format folders (Azure ML registry models, ftc's own
mlflow_model_folder) and models read from object stores (tests/runtime/test_storage_servers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftc.runtime.config import load_config

pytestmark = pytest.mark.slow


TWO_STEPS = ("--max_steps", "2", "--evaluation_strategy", "no", "--save_as_mlflow_model", "false")
WEIGHT_FILES = ("config.json", "model.safetensors")


def _registry_model(tiny_model: Path, folder: Path, flavor: str = "hftransformersv2") -> Path:
    """An Azure ML registry model's layout: MLmodel at the top, the weights in data/model, the tokenizer in data/tokenizer."""
    import shutil

    for sub in ("data/model", "data/tokenizer"):
        (folder / sub).mkdir(parents=True)
    for f in tiny_model.iterdir():
        shutil.copy2(f, folder / ("data/model" if f.name in WEIGHT_FILES else "data/tokenizer") / f.name)
    (folder / "MLmodel").write_text(f"flavors:\n  {flavor}:\n    task_type: text-classification\n  python_function:\n    loader_module: azureml.evaluate.mlflow.hftransformers\n")
    return folder


def _spec_with_model(model: str) -> str:
    from tests.runtime.conftest import TINY_SPEC

    return TINY_SPEC.replace("model: ./models/tiny", f"model: {model}")


def test_an_azure_ml_registry_mlflow_model_is_read_from_its_data_folders(compile_config, project: Path, tiny_model: Path, run_inprocess) -> None:
    from ftc.runtime.models import model_source, tokenizer_source

    registry = _registry_model(tiny_model, project / "models" / "registry")
    config = compile_config(_spec_with_model("./models/registry"))
    cfg = load_config(config)
    assert model_source(cfg) == str(registry / "data" / "model")
    assert tokenizer_source(cfg) == str(registry / "data" / "tokenizer")
    code, _, err = run_inprocess(config, "--output_dir", str(project / "registry_run"), *TWO_STEPS, "--evaluation_strategy", "epoch")
    assert code == 0, err
    plain = compile_config(name="plain.yaml", build="plain")
    code, _, err = run_inprocess(plain, "--output_dir", str(project / "plain_run"), *TWO_STEPS, "--evaluation_strategy", "epoch")
    assert code == 0, err
    # the same weights and tokenizer as the plain folder: the same loss before and after training
    registry_metrics = json.loads((project / "registry_run" / "metrics.json").read_text())
    plain_metrics = json.loads((project / "plain_run" / "metrics.json").read_text())
    assert registry_metrics["initial_eval_loss"] == plain_metrics["initial_eval_loss"]
    assert registry_metrics["eval_loss"] == plain_metrics["eval_loss"]


def test_ftcs_own_mlflow_model_folder_is_a_starting_model(compile_config, project: Path, run_inprocess) -> None:
    from ftc.runtime.models import model_source, tokenizer_source

    first = compile_config()
    code, _, err = run_inprocess(first, "--output_dir", str(project / "first"), "--max_steps", "4")
    assert code == 0, err
    folder = project / "first" / "mlflow_model_folder"
    assert (folder / "MLmodel").is_file()
    config = compile_config(_spec_with_model("./first/mlflow_model_folder"), name="second.yaml", build="second")
    cfg = load_config(config)
    weights, tokenizer = Path(model_source(cfg)), Path(tokenizer_source(cfg))
    assert weights.parent == folder and (weights / "config.json").is_file()
    assert tokenizer.is_relative_to(folder) and any(tokenizer.glob("tokenizer*"))
    code, _, err = run_inprocess(config, "--output_dir", str(project / "second"), *TWO_STEPS)
    assert code == 0, err
    assert (project / "second" / "pytorch_model_folder" / "model.safetensors").is_file()


def test_an_mlflow_model_of_another_flavor_is_a_clear_error(compile_config, project: Path, run_inprocess) -> None:
    folder = project / "models" / "sklearn"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors:\n  sklearn:\n    pickled_model: model.pkl\n  python_function:\n    loader_module: mlflow.sklearn\n")
    config = compile_config(_spec_with_model("./models/sklearn"))
    code, _, err = run_inprocess(config, *TWO_STEPS)
    assert code != 0
    assert "MLflow model of flavour sklearn, python_function" in err and "transformers" in err and "Traceback" not in err


def test_an_mlflow_transformers_model_without_weights_is_a_clear_error(compile_config, project: Path, tiny_model: Path, run_inprocess) -> None:
    import shutil

    folder = _registry_model(tiny_model, project / "models" / "reference", flavor="transformers")
    shutil.rmtree(folder / "data" / "model")
    config = compile_config(_spec_with_model("./models/reference"))
    code, _, err = run_inprocess(config, *TWO_STEPS)
    assert code != 0
    assert "without its weights" in err and "save_pretrained=False" in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--output_dir", "ftp://host/runs", "checkpointing.output_dir 'ftp://host/runs': ftc reads no ftp:// locations"),
        ("--output_dir", "azureml://datastores/x/paths/run", "is an Azure ML asset: only an Azure ML job can read it"),
        ("--model_selector_output", "ftp://host/model", "model.model_selector_output 'ftp://host/model': ftc reads no ftp://"),
    ],
)
def test_a_location_this_runtime_cannot_reach_is_a_clear_error(
    compile_config, project: Path, run_inprocess, monkeypatch, tmp_path: Path, option: str, value: str, message: str
) -> None:
    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "cache"))
    code, _, err = run_inprocess(compile_config(), option, value, *TWO_STEPS)
    assert code != 0
    assert message in err and "Traceback" not in err
