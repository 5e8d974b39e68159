"""Lint knows the URI schemes of every location (FTC160-FTC162); azureml: assets are refused on the targets that
cannot read them (FTC163, one rule shared by every target but azureml); the path rules skip URIs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ftc.backends.base import AZUREML_RULE
from ftc.backends.registry import backends, get_backend
from ftc.compiler.build import compile_spec, load_resolved, plan_for
from ftc.errors import SpecError
from ftc.spec.rules import Finding, run_rules
from tests.spec.test_rules import hide_package

BASE = "task: text_classification\nmodel: /models/tiny\n"
DATA = "data: {{train_file_path: data/train.jsonl}}\n"  # formatted with the location line
# Each location key, as a spec line that puts `{uri}` there.
LOCATIONS = {
    "data.train_file_path": "data: {{train_file_path: '{uri}'}}\n",
    "data.preprocess_output": "data: {{preprocess_output: '{uri}'}}\n",
    "model.model_selector_output": "model: '{uri}'\n" + DATA,
    "model.tokenizer_name": "model: {{path: /models/tiny, tokenizer_name: '{uri}'}}\n" + DATA,
    "checkpointing.output_dir": "checkpointing: {{output_dir: '{uri}'}}\n" + DATA,
    "deepspeed.deepspeed": "deepspeed: {{apply_deepspeed: true, deepspeed: '{uri}'}}\n" + DATA,
    "targets.ray.storage_path": "targets: {{ray: {{storage_path: '{uri}'}}}}\n" + DATA,
}


def spec_text(key: str, uri: str) -> str:
    line = LOCATIONS[key].format(uri=uri)
    return ("task: text_classification\n" if line.startswith("model:") else BASE) + line


def findings(write_spec: Callable[..., Path], text: str, rule: str) -> list[Finding]:
    return [f for f in run_rules(load_resolved(write_spec(text))) if f.rule == rule]


@pytest.mark.parametrize("key", sorted(LOCATIONS))
def test_an_unknown_scheme_is_an_error_naming_the_key(write_spec: Callable[..., Path], key: str) -> None:
    (found,) = findings(write_spec, spec_text(key, "ftp://host/x"), "FTC160")
    assert (found.severity, found.key) == ("error", key)
    assert "no ftp:// locations" in found.message and "s3://" in found.message and "azureml://" in found.message


KNOWN = ["s3://b/k", "gs://b/k", "gcs://b/k", "abfs://c/k", "abfss://c/k", "az://c/k", "hf://datasets/o/d", "azureml://datastores/d/k"]


@pytest.mark.parametrize("uri", KNOWN)
def test_known_schemes_are_no_error(write_spec: Callable[..., Path], uri: str) -> None:
    assert findings(write_spec, spec_text("data.train_file_path", uri), "FTC160") == []


@pytest.mark.parametrize(
    ("uri", "package", "extra"), [("s3://b/k", "s3fs", "s3"), ("gs://b/k", "gcsfs", "gcs"), ("az://c/k", "adlfs", "azure")]
)
def test_a_missing_package_is_a_warning_naming_the_extra(
    write_spec: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, uri: str, package: str, extra: str
) -> None:
    text = spec_text("checkpointing.output_dir", uri)
    assert findings(write_spec, text, "FTC161") == []  # installed here
    hide_package(monkeypatch, package)
    (found,) = findings(write_spec, text, "FTC161")
    assert (found.severity, found.key) == ("warning", "checkpointing.output_dir")
    assert f"pip install 'ftc[{extra}]'" in found.message and package in found.message


def test_credentials_not_in_env_secrets_are_named_once_per_scheme(write_spec: Callable[..., Path]) -> None:
    text = BASE + "data: {train_file_path: 's3://b/train.jsonl', validation_file_path: 's3://b/v.jsonl'}\n"
    (found,) = findings(write_spec, text, "FTC162")
    assert (found.severity, found.key) == ("warning", "data.train_file_path")
    assert "AWS_ACCESS_KEY_ID" in found.message and "env.secrets" in found.message
    assert findings(write_spec, text + "env: {secrets: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]}\n", "FTC162") == []
    mixed = text + "checkpointing: {output_dir: 'gs://b/runs'}\nenv: {secrets: [AWS_ACCESS_KEY_ID]}\n"
    assert [f.key for f in findings(write_spec, mixed, "FTC162")] == ["checkpointing.output_dir"]


@pytest.mark.parametrize("uri", ["s3://b/../../k", "azureml:my-data:1"])
def test_path_rules_skip_uris(write_spec: Callable[..., Path], uri: str) -> None:
    """FTC120 (a path outside the spec's folder) is about local paths only."""
    assert findings(write_spec, spec_text("checkpointing.output_dir", uri), "FTC120") == []
    assert findings(write_spec, spec_text("checkpointing.output_dir", "../../k"), "FTC120") != []


def test_lint_of_a_remote_spec_imports_no_filesystem(write_spec: Callable[..., Path]) -> None:
    spec = write_spec(spec_text("data.train_file_path", "s3://b/k") + "checkpointing: {output_dir: 'gs://b/o'}\n")
    code = (
        "import sys; from ftc.cli.app import main\n"
        f"sys.argv = ['ftc', 'lint', {str(spec)!r}]\ntry: main()\nexcept SystemExit: pass\n"
        "print(sorted(m for m in ('fsspec', 's3fs', 'gcsfs', 'adlfs', 'huggingface_hub') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "FTC162" in result.stdout, result.stdout + result.stderr  # it linted the spec
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


# --------------------------------------------------------------------------- Azure ML assets (FTC163)

ASSETS = ["azureml://registries/azureml/models/phi-3/versions/1", "azureml:my-data:1"]


def test_every_target_but_azureml_has_the_shared_rule() -> None:
    holding = {name for name, backend in backends().items() if AZUREML_RULE in backend.rules}
    assert holding == set(backends()) - {"azureml"}
    rules = {backend.rules[AZUREML_RULE] for name, backend in backends().items() if name in holding}
    assert len(rules) == 1  # one rule, not copies


@pytest.mark.parametrize("target", ["local", "slurm", "ray"])
@pytest.mark.parametrize("asset", ASSETS)
def test_an_azureml_asset_is_refused_elsewhere(write_spec: Callable[..., Path], tmp_path: Path, target: str, asset: str) -> None:
    spec = write_spec(spec_text("model.model_selector_output", asset))
    resolved = load_resolved(spec)
    (found,) = [f for f in get_backend(target).check(plan_for(resolved, target, tmp_path / "b")) if f.rule == AZUREML_RULE]
    assert (found.severity, found.key) == ("error", "model.model_selector_output")
    assert "only an Azure ML job can read" in found.message and "--target azureml" in found.message
    with pytest.raises(SpecError, match=r"model.model_selector_output: .*Azure ML asset.*\[FTC163\]"):
        compile_spec(spec, [target], tmp_path / "build")
    assert not (tmp_path / "build").exists()  # nothing half-written


@pytest.mark.parametrize("asset", ASSETS)
def test_azureml_passes_an_asset_as_an_input(write_spec: Callable[..., Path], tmp_path: Path, asset: str) -> None:
    spec = write_spec(spec_text("model.model_selector_output", asset))
    (folder,) = compile_spec(spec, ["azureml"], tmp_path / "build")
    assert f"path: {asset}" in (folder / "pipeline.yaml").read_text()
