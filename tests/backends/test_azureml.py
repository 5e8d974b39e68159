"""The azureml target: the SDK loads and validates what it writes, the checks catch what the SDK does not,
and the component's command, substituted as Azure ML does, trains a model.

Everything runs offline: azure-ai-ml validates without a workspace, and `submit` must fail fast and
clearly when there are no credentials.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftc import __version__
from ftc.backends import _azureml_component as aml
from ftc.backends import azureml as azureml_backend
from ftc.backends.azureml import AzuremlSubmitError, _job_input_overrides, prepare_job, submit_pipeline, workspace_of
from ftc.backends.registry import get_backend
from ftc.compiler.build import compile_spec, load_resolved
from ftc.compiler.plan import build_plan
from ftc.cli.lint_report import lint_file
from ftc.errors import SpecError

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).with_name("fixtures") / "azureml"
SEED_001 = REPO / "tests" / "spec" / "fixtures" / "seed_001_text_classification.md"
FILES = {"component.yaml", "pipeline.yaml", "environment/conda.yaml", "workspace.json", "ftc.resolved.json", "manifest.json"}

TINY = """\
task: text_classification
model: ./models/tiny
data:
  train_file_path: data/train.jsonl
  validation_file_path: data/validation.jsonl
  max_seq_length: 32
training:
  num_train_epochs: 8
  per_device_train_batch_size: 16
  per_device_eval_batch_size: 64
  seed: 0
optimizer:
  optim: adamw_torch
  learning_rate: 0.002
  warmup_steps: 10
evaluation:
  metric_for_best_model: accuracy
checkpointing:
  output_dir: out
  save_total_limit: 1
"""

# Every feature of the target at once: LoRA, a DeepSpeed file, two nodes on a named cluster, a registered
# environment, environment variables, explicit component name and version, a name Azure ML would refuse.
FULL = """\
task: causal_lm
name: Smol-Chat.v2
description: "Chat finetune with 'quotes' and: colons"
model: ./models/smol lm
data:
  preprocess_output: ./data/chat
  validation_file_path: ./data/chat/validation.jsonl
lora:
  apply_lora: true
  lora_r: 16
  target_modules: [q_proj, v_proj]
training:
  num_train_epochs: 2
  per_device_train_batch_size: 2
deepspeed:
  apply_deepspeed: true
  deepspeed: ds/zero3.json
resources:
  nodes: 2
  processes_per_node: 4
  compute: gpu-cluster
env:
  vars:
    OMP_NUM_THREADS: 1
targets:
  azureml:
    component_name: smol_chat_finetune
    component_version: "2.1.0"
    environment: azureml:acft-hf-nlp-gpu:52
    experiment_name: smol-chat
    feeds_model_evaluation: true
"""


def task_spec(task: str) -> str:
    return f"task: {task}\nmodel: ./models/m\ndata:\n  preprocess_output: ./data\n"


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec (and, for FULL, its DeepSpeed file) into a project folder; returns the spec path."""

    def write_(text: str, name: str = "spec.yaml") -> Path:
        root = tmp_path / "project"
        (root / "ds").mkdir(parents=True, exist_ok=True)
        (root / "ds" / "zero3.json").write_bytes((FIXTURES / "zero3_gather.json").read_bytes())
        path = root / name
        path.write_text(textwrap.dedent(text))
        return path

    return write_


def compile_azureml(spec: Path, out: Path | None = None) -> Path:
    (folder,) = compile_spec(spec, ["azureml"], out or spec.parent / "build")
    return folder


def read_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_and_validate(folder: Path) -> tuple[Any, Any]:
    """load_component / load_job and `_validate()`, failing with the SDK's messages."""
    from azure.ai.ml import load_component, load_job

    component = load_component(source=folder / "component.yaml")
    result = component._validate()
    assert result.passed, result.error_messages
    job = load_job(source=folder / "pipeline.yaml")
    result = job._validate()
    assert result.passed, result.error_messages
    return component, job


def plan_of(spec: Path) -> Any:
    resolved = load_resolved(spec)
    return build_plan(resolved, "azureml", "../..")


# --- what compile writes --------------------------------------------------------------------------


def test_compile_writes_component_pipeline_and_environment(write: Callable[..., Path]) -> None:
    spec = write(TINY)
    folder = compile_azureml(spec)
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == FILES
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["target"] == "azureml" and set(manifest["files"]) == FILES - {"manifest.json"}
    for name in ("component.yaml", "pipeline.yaml", "environment/conda.yaml"):
        assert (folder / name).read_text().startswith("# Generated by ftc ")
    for path in folder.rglob("*"):
        if path.is_file():  # nothing machine-specific: byte-identical output needs relative paths only
            assert str(spec.parent) not in path.read_text(), path
    conda = read_yaml(folder / "environment" / "conda.yaml")
    assert any(d == "pip" for d in conda["dependencies"])
    torch, ftc = conda["dependencies"][-1]["pip"][:2]
    assert torch == f"torch=={aml.TORCH_VERSION}"
    assert ftc == f"ftc[train] @ git+{aml.FTC_REPOSITORY}@v{__version__}"  # from git, as docs/ci.md installs it


def test_same_spec_same_bytes(write: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write(FULL)
    one = compile_azureml(spec, tmp_path / "one")
    monkeypatch.chdir(tmp_path)
    two = compile_azureml(spec, tmp_path / "two")
    tree = lambda f: {p.relative_to(f).as_posix(): p.read_bytes() for p in sorted(f.rglob("*")) if p.is_file()}  # noqa: E731
    assert tree(one) == tree(two)


def test_compile_does_not_import_azure(write: Callable[..., Path]) -> None:
    spec = write(FULL)
    code = (
        "import sys; from ftc.compiler.build import compile_spec; "
        f"compile_spec({str(spec)!r}, ['azureml'], {str(spec.parent / 'b')!r}); "
        "print(sorted(m for m in sys.modules if m.startswith('azure')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- the SDK loads and validates every generated component and pipeline ---------------------------


@pytest.mark.parametrize(
    "text",
    [TINY, FULL, *(task_spec(t) for t in ("text_classification", "question_answering", "translation", "summarization", "causal_lm"))],
    ids=["tiny", "full", "text_classification", "question_answering", "translation", "summarization", "causal_lm"],
)
def test_component_and_pipeline_load_and_validate(write: Callable[..., Path], text: str) -> None:
    folder = compile_azureml(write(text))
    component, job = load_and_validate(folder)
    data = read_yaml(folder / "component.yaml")
    assert aml.check_component(data) == []
    assert set(component.inputs) == set(data["inputs"])
    assert {n: o.type for n, o in component.outputs.items()} == aml.OUTPUTS
    node = job.jobs[aml.STEP]
    assert node.component.command == component.command  # the pipeline runs this very component


def test_full_spec_maps_onto_component_and_pipeline(write: Callable[..., Path]) -> None:
    folder = compile_azureml(write(FULL))
    component, job = load_and_validate(folder)
    assert component.name == "smol_chat_finetune" and component.version == "2.1.0"
    assert str(component.environment) in ("azureml:acft-hf-nlp-gpu:52", "acft-hf-nlp-gpu:52")
    assert component.distribution.type == "pytorch"
    assert component.inputs["lora_r"].default == 16 and component.inputs["apply_lora"].default == "true"
    assert component.inputs["target_modules"].default == "[q_proj, v_proj]"
    assert component.inputs["num_train_epochs"].default == 2
    assert component.inputs["learning_rate"].default == 1e-4  # the causal_lm task default, resolved
    assert component.inputs["preprocess_output"].optional is False
    assert component.inputs["train_file_path"].optional is True
    node = job.jobs[aml.STEP]
    assert node.resources.instance_count == 2
    assert node.distribution.process_count_per_instance == 4
    assert node.environment_variables == {"OMP_NUM_THREADS": "1"}
    pipeline = read_yaml(folder / "pipeline.yaml")
    assert pipeline["settings"]["default_compute"] == "azureml:gpu-cluster"
    assert pipeline["experiment_name"] == "smol-chat"
    assert pipeline["inputs"]["model_selector_output"] == {"type": "uri_folder", "path": "../../models/smol lm"}
    assert pipeline["inputs"]["deepspeed"] == {"type": "uri_file", "path": "../../ds/zero3.json"}
    assert {o["mode"] for o in pipeline["outputs"].values()} == {"rw_mount"}
    # a registered environment: no conda file is written
    assert not (folder / "environment").exists()


def test_serverless_with_instance_type_and_upload(write: Callable[..., Path]) -> None:
    text = TINY + "resources:\n  instance_type: Standard_NC24ads_A100_v4\ntargets:\n  azureml:\n    output_mode: upload\n"
    folder = compile_azureml(write(text))
    _, job = load_and_validate(folder)
    pipeline = read_yaml(folder / "pipeline.yaml")
    assert pipeline["settings"]["default_compute"] == "serverless"
    assert job.jobs[aml.STEP].resources.instance_type == "Standard_NC24ads_A100_v4"
    assert {o["mode"] for o in pipeline["outputs"].values()} == {"upload"}
    component = read_yaml(folder / "component.yaml")
    assert component["environment"] == {"image": aml.GPU_IMAGE, "conda_file": "./environment/conda.yaml"}


# --- GPU requests: the Job's nodes, processes and GPUs; the image and torch pin ----------------------


GOLDEN_GPU = REPO / "tests" / "golden" / "llm_lora_2x8_gpu" / "spec.yaml"


def test_issue_spec_asks_for_two_vms_of_eight_gpus(tmp_path: Path) -> None:
    """Issue 12's spec (2 nodes x 8 processes, device auto): the SDK loads a pipeline of 2 instances of an
    8-GPU VM size with 8 processes each, on the CUDA image, and the runtime is told the job is on GPUs."""
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(GOLDEN_GPU.read_bytes())
    folder = compile_azureml(spec)
    component, job = load_and_validate(folder)
    node = job.jobs[aml.STEP]
    assert node.resources.instance_count == 2
    assert node.resources.instance_type == "Standard_ND96amsr_A100_v4"  # 8 x A100 80 GB
    assert node.distribution.type == "pytorch" and node.distribution.process_count_per_instance == 8
    assert component.environment.image == aml.GPU_IMAGE
    assert json.loads((folder / "ftc.resolved.json").read_text())["resources"]["device"] == "gpu"


def test_cpu_spec_requests_no_gpu(write: Callable[..., Path]) -> None:
    folder = compile_azureml(write(TINY + "resources:\n  device: cpu\n  processes_per_node: 2\n"))
    component, job = load_and_validate(folder)
    node = job.jobs[aml.STEP]
    assert node.resources.instance_type is None and node.distribution.process_count_per_instance == 2
    assert "instance_type" not in read_yaml(folder / "pipeline.yaml")["jobs"][aml.STEP]["resources"]
    assert component.environment.image == aml.CPU_IMAGE and "cuda" not in aml.CPU_IMAGE
    assert json.loads((folder / "ftc.resolved.json").read_text())["resources"]["device"] == "cpu"


@pytest.mark.parametrize(
    ("resources", "vm_size"),
    [
        ("processes_per_node: 1", "Standard_NC24ads_A100_v4"),
        ("processes_per_node: 4\n  accelerator_type: a100", "Standard_NC96ads_A100_v4"),
        ("processes_per_node: 8\n  accelerator_type: A100-40G", "Standard_ND96asr_v4"),
        ("processes_per_node: 8\n  accelerator_type: H100", "Standard_ND96isr_H100_v5"),
        ("processes_per_node: 2\n  accelerator_type: H100", "Standard_NC80adis_H100_v5"),
        ("processes_per_node: 4\n  accelerator_type: T4", "Standard_NC64as_T4_v3"),
        ("processes_per_node: 3\n  instance_type: Standard_NC24s_v3", "Standard_NC24s_v3"),  # set: used as it is
    ],
)  # fmt: skip
def test_gpu_vm_size_from_accelerator_type_and_gpus(write: Callable[..., Path], resources: str, vm_size: str) -> None:
    _, job = load_and_validate(compile_azureml(write(TINY + f"resources:\n  {resources}\n")))
    assert job.jobs[aml.STEP].resources.instance_type == vm_size


def test_named_cluster_decides_its_vm_size(write: Callable[..., Path]) -> None:
    folder = compile_azureml(write(TINY + "resources:\n  processes_per_node: 3\n  compute: gpu-cluster\n"))
    assert "instance_type" not in read_yaml(folder / "pipeline.yaml")["jobs"][aml.STEP]["resources"]


@pytest.mark.parametrize(
    ("resources", "key", "says"),
    [
        ("processes_per_node: 3", "resources.processes_per_node", "A100-80G VMs with 1, 2, 4, 8 GPU"),
        ("accelerator_type: A10G", "resources.accelerator_type", "ftc knows the types A100-80G"),
    ],
)
def test_gpu_job_without_a_vm_size_is_refused(write: Callable[..., Path], resources: str, key: str, says: str) -> None:
    spec = write(TINY + f"resources:\n  {resources}\n")
    with pytest.raises(SpecError, match=rf"{re.escape(key)}: no Azure VM size .*{says}.*set resources.instance_type .*\[FTC519\]"):
        compile_azureml(spec)
    assert not (spec.parent / "build").exists()


@pytest.mark.parametrize(
    ("resources", "says"),
    [
        ("processes_per_node: 8\n  instance_type: standard_nc24ads_a100_v4", "has 1 GPU(s) but the job uses 8 per node"),
        ("device: cpu\n  instance_type: Standard_ND96isr_H100_v5", "has 8 GPU(s) but the job uses 0 per node"),
    ],
)
def test_vm_size_unlike_the_job_warns(write: Callable[..., Path], resources: str, says: str) -> None:
    findings = get_backend("azureml").check(plan_of(write(TINY + f"resources:\n  {resources}\n")))
    assert [(f.rule, f.key) for f in findings if f.rule == "FTC521"] == [("FTC521", "resources.instance_type")]
    assert says in next(f.message for f in findings if f.rule == "FTC521")


def test_placeholder_repository_warns_until_set(write: Callable[..., Path]) -> None:
    rules = lambda text: {f.rule for f in lint_file(write(text), [], ["azureml"]).findings}  # noqa: E731
    assert "FTC520" in rules(TINY)
    assert "FTC520" not in rules(TINY + "targets:\n  azureml:\n    ftc_requirement: ftc[train] @ git+https://x.example/ftc@v1\n")
    assert "FTC520" not in rules(TINY + "targets:\n  azureml:\n    environment: azureml:ftc:1\n")


def test_gpu_image_cuda_matches_the_torch_pin() -> None:
    """The one pairing: the torch pin of ftc[train] is TORCH_VERSION, whose wheels are CUDA TORCH_CUDA_MAJOR,
    the CUDA major of the GPU image (DeepSpeed refuses to build its ops with another)."""
    import tomllib

    train = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    assert f"torch=={aml.TORCH_VERSION}" in train, "torch pin changed: check its CUDA, then TORCH_CUDA_MAJOR and GPU_IMAGE"
    image_cuda = re.search(r"-cuda(\d+)\.\d+-", aml.GPU_IMAGE)
    assert image_cuda and int(image_cuda.group(1)) == aml.TORCH_CUDA_MAJOR


def test_docs_list_every_vm_size() -> None:
    doc = azureml_backend.__doc__ or ""
    for accelerator, sizes in aml.GPU_INSTANCE_TYPES.items():
        assert accelerator in doc
        assert all(f"| {name} |" in doc for name in sizes.values()), accelerator
    assert aml.GPU_IMAGE in doc and aml.CPU_IMAGE in doc and f"torch=={aml.TORCH_VERSION}" in doc


def test_env_vars_with_references_expand_on_the_node(write: Callable[..., Path], tmp_path: Path) -> None:
    """Literal values are the node's environment_variables; `$NAME` / `${NAME}` values are exported by the
    command, so bash expands them where the job runs (empty when unset)."""
    env = "env:\n  vars:\n    PLAIN: 'a b'\n    EFA: '/opt/efa/lib:$LD_LIBRARY_PATH'\n    TWO: '${HOME}/x \"$UNSET_VAR\" `y` ]]]'\n"
    folder = compile_azureml(write(TINY + env))
    component, job = load_and_validate(folder)
    assert job.jobs[aml.STEP].environment_variables == {"PLAIN": "a b"}
    data = read_yaml(folder / "component.yaml")
    assert aml.check_component(data) == []
    values = aml.resolve_inputs(data, data_inputs(tmp_path))
    command = aml.substitute(data["command"], values, {name: str(tmp_path / name) for name in aml.OUTPUTS})
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "python").write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$EFA" "$TWO" "${PLAIN-unset}" > "$OUT"\n')
    (tools / "python").chmod(0o755)
    node_env = {"PATH": f"{tools}:/usr/bin:/bin", "OUT": str(tmp_path / "seen"), "HOME": "/home/u", "LD_LIBRARY_PATH": "/usr/lib/x"}
    subprocess.run(["bash", "-c", command], cwd=tmp_path, env=node_env, check=True, timeout=60)
    seen = (tmp_path / "seen").read_bytes().decode().split("\0")[:-1]
    assert seen == ["/opt/efa/lib:/usr/lib/x", '/home/u/x "" `y` ]]]', "unset"]  # PLAIN comes from Azure ML, not the command


def seed_rows(path: Path) -> dict[str, tuple[str, str, str]]:
    """Name -> (type, default, optional) of every parameter row of a seed's tables."""
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.fullmatch(r"[a-z_0-9]+", cells[0]) and cells[0] != "name":
            rows[cells[0]] = (cells[2], cells[3], cells[4])
    return rows


def test_inputs_have_the_seed_names_types_and_optional_flags(write: Callable[..., Path]) -> None:
    rows = seed_rows(SEED_001)
    assert len(rows) >= 40
    component = read_yaml(compile_azureml(write(task_spec("text_classification"))) / "component.yaml")
    inputs = component["inputs"]
    for name, (kind, default, optional) in rows.items():
        assert name in inputs, name
        assert inputs[name]["type"] == kind, name
        assert str(inputs[name].get("optional", False)) == optional, name
        if inputs[name].get("enum") == ["true", "false"]:
            assert kind == "string" and default in ("true", "false") and inputs[name]["default"] == default, name
    assert inputs["deepspeed"] == {"type": "uri_file", "optional": True, "description": inputs["deepspeed"]["description"]}
    assert inputs["model_selector_output"]["type"] == "uri_folder"
    assert component["outputs"]["pytorch_model_folder"]["type"] == "uri_folder"
    assert component["outputs"]["mlflow_model_folder"]["type"] == "mlflow_model"


def test_defaults_come_from_the_spec(write: Callable[..., Path]) -> None:
    inputs = read_yaml(compile_azureml(write(TINY)) / "component.yaml")["inputs"]
    assert inputs["learning_rate"]["default"] == 0.002
    assert inputs["optim"]["default"] == "adamw_torch"
    assert inputs["metric_for_best_model"]["default"] == "accuracy"
    assert inputs["metric_for_best_model"]["enum"] == ["loss", "f1_macro", "mcc", "accuracy", "precision_macro", "recall_macro"]
    assert inputs["num_train_epochs"] == {
        "type": "integer", "default": 8, "min": 1, "optional": True, "description": "Number of epochs to run for finetune."
    }  # fmt: skip
    assert inputs["train_file_path"]["optional"] is False  # the data the spec gives is required
    assert inputs["preprocess_output"]["optional"] is True
    assert "eval_accumulation_steps" in inputs and "default" not in inputs["eval_accumulation_steps"]
    assert "output_dir" not in inputs and "nodes" not in inputs  # outputs and the pipeline node set these


def test_command_runs_the_runtime_with_every_input(write: Callable[..., Path]) -> None:
    component = read_yaml(compile_azureml(write(TINY)) / "component.yaml")
    command = component["command"]
    runtime = command.split(" && ")[-1]
    assert runtime.startswith("python -m ftc.runtime --config ftc.resolved.json --output_dir ftc_run ")
    for name, spec in component["inputs"].items():
        word = f"'${{{{inputs.{name}}}}}'"
        if spec["optional"]:
            assert f"$[[--{name} {word}]]" in command or re.search(r"\$\[\[--[a-z_.]+ " + re.escape(word) + r"\]\]", command), name
        else:
            assert f" --{name} {word}" in command.replace("$[[", " "), name
            assert f"$[[--{name} {word}]]" not in command
    assert "'${{outputs.pytorch_model_folder}}'" in command and "'${{outputs.mlflow_model_folder}}'" in command
    assert "--tracking.wandb_config.project '${{inputs.wandb_config_project}}'" in command


# --- checks: what the SDK lets through, the backend refuses ---------------------------------------


def good_component() -> dict[str, Any]:
    return {
        "$schema": aml.COMPONENT_SCHEMA,
        "name": "lora_finetune",
        "version": "1",
        "type": "command",
        "environment": "azureml:ftc@latest",
        "inputs": {
            "lora_r": {"type": "integer", "default": 8, "min": 1, "optional": True},
            "apply_lora": {"type": "string", "enum": ["true", "false"], "default": "false", "optional": True},
            "train": {"type": "uri_file"},
        },
        "outputs": {"pytorch_model_folder": {"type": "uri_folder"}},
        "command": (
            "python -m ftc.runtime --train_file_path '${{inputs.train}}' $[[--lora_r '${{inputs.lora_r}}']] "
            "$[[--apply_lora '${{inputs.apply_lora}}']] --output_dir '${{outputs.pytorch_model_folder}}'"
        ),
    }


def _set(c: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split("/")
    for p in parents:
        c = c[p]
    if value is _DELETE:
        del c[last]
    else:
        c[last] = value


_DELETE = object()

# (rule, the SDK accepts the broken component?, changes)
BROKEN: dict[str, tuple[str, bool, list[tuple[str, Any]]]] = {
    "optional input outside $[[ ]]": (
        "FTC503", True, [("command", "python -m ftc.runtime --train_file_path '${{inputs.train}}' --lora_r '${{inputs.lora_r}}' "
                                     "$[[--apply_lora '${{inputs.apply_lora}}']] --output_dir '${{outputs.pytorch_model_folder}}'")],
    ),
    "enum default outside the enum": ("FTC504", True, [("inputs/apply_lora/default", "yes")]),
    "unused input": ("FTC505", True, [("inputs/seed", {"type": "integer", "default": 42, "optional": True})]),
    "integer input given a float": ("FTC506", True, [("inputs/lora_r/default", 8.5)]),
    "default below min": ("FTC506", True, [("inputs/lora_r/default", 0)]),
    "unquoted value": (
        "FTC508", True, [("command", "python -m ftc.runtime --train_file_path ${{inputs.train}} $[[--lora_r '${{inputs.lora_r}}']] "
                                     "$[[--apply_lora '${{inputs.apply_lora}}']] --output_dir '${{outputs.pytorch_model_folder}}'")],
    ),
    "component name Azure ML refuses": ("FTC501", False, [("name", "Lora-Finetune!")]),
    "input name Azure ML refuses": ("FTC502", False, [("inputs/lora-r", {"type": "integer", "optional": True})]),
}  # fmt: skip


def test_the_good_component_is_clean(tmp_path: Path) -> None:
    assert aml.check_component(good_component()) == []
    assert sdk_accepts(good_component(), tmp_path)


def sdk_accepts(component: dict[str, Any], folder: Path) -> bool:
    """Whether azure-ai-ml loads the component and `_validate()` passes."""
    from azure.ai.ml import load_component

    path = folder / "c.yaml"
    path.write_text(yaml.safe_dump(component, sort_keys=False))
    try:
        return bool(load_component(source=path)._validate().passed)
    except Exception:  # noqa: BLE001 - the SDK's schema errors come in several types
        return False


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_check_fails_on_a_broken_component(case: str, tmp_path: Path) -> None:
    rule, sdk_passes, changes = BROKEN[case]
    component = copy.deepcopy(good_component())
    for path, value in changes:
        _set(component, path, value)
    problems = aml.check_component(component)
    assert rule in {p.rule for p in problems}, problems
    # the checks are needed: for these, the SDK's own validation says nothing
    assert sdk_accepts(component, tmp_path) is sdk_passes


def test_a_broken_check_result_names_the_input() -> None:
    component = good_component()
    component["inputs"]["apply_lora"]["default"] = "yes"
    (problem,) = aml.check_component(component)
    assert problem.input == "apply_lora" and "'yes'" in problem.message


def test_reference_to_a_missing_input_is_reported() -> None:
    component = good_component()
    component["command"] += " $[[--seed '${{inputs.sede}}']]"
    assert any(p.rule == "FTC505" and "sede" in p.message for p in aml.check_component(component))


# --- bad values fail the compile with the spec's file:line ----------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("targets:\n  azureml:\n    component_name: Lora-Finetune\n", r"spec.yaml:\d+:5: targets.azureml.component_name: .*\[FTC501\]"),
        ("lora:\n  apply_lora: true\n  merge_lora_weights: false\ntargets:\n  azureml:\n    feeds_model_evaluation: true\n",
         r"spec.yaml:\d+:3: lora.merge_lora_weights: must be true with apply_lora .*\[FTC510\]"),
        ("deepspeed:\n  apply_deepspeed: true\n  deepspeed: ds/zero3.json\n",
         r"spec.yaml:\d+:3: deepspeed.deepspeed: zero3.json uses ZeRO stage 3 without .*stage3_gather_16bit_weights_on_model_save.*\[FTC511\]"),
        ("resources:\n  nodes: 2\ntargets:\n  azureml:\n    output_mode: upload\n",
         r"spec.yaml:\d+:5: targets.azureml.output_mode: is upload but multi-node .*needs mount \[FTC512\]"),
        ("targets:\n  azureml:\n    environment: my-env\n", r"spec.yaml:\d+:5: targets.azureml.environment: .*\[FTC516\]"),
        ("resources:\n  device: cpu\n  nodes: 2\n", r"spec.yaml:\d+:3: resources.nodes: CPU training on Azure ML runs on a single node .*\[FTC518\]"),
        ("lora:\n  lora_r: 8.5\n", r"spec.yaml:\d+:3: lora.lora_r: .*integer"),
    ],
    ids=["component-name", "merge-for-evaluation", "zero3-gather", "multi-node-upload", "environment", "cpu-multi-node",
         "integer-float"],
)  # fmt: skip
def test_bad_values_fail_at_compile_time(write: Callable[..., Path], extra: str, expected: str) -> None:
    spec = write(TINY + extra)
    (spec.parent / "ds" / "zero3.json").write_bytes((FIXTURES / "zero3_no_gather.json").read_bytes())
    with pytest.raises(SpecError, match=expected):
        compile_azureml(spec)
    assert not (spec.parent / "build").exists()


def test_deeply_nested_deepspeed_file_is_a_clean_error(write: Callable[..., Path]) -> None:
    spec = write(TINY + "deepspeed:\n  apply_deepspeed: true\n  deepspeed: ds/zero3.json\n")
    (spec.parent / "ds" / "zero3.json").write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(SpecError, match=r"zero3.json is not a readable JSON DeepSpeed config: it is not valid JSON.*\[FTC511\]"):
        compile_azureml(spec)


def test_zero3_file_with_gather_compiles(write: Callable[..., Path]) -> None:
    compile_azureml(write(TINY + "deepspeed:\n  apply_deepspeed: true\n  deepspeed: ds/zero3.json\n"))


@pytest.mark.parametrize(
    ("extra", "rule", "key"),
    [
        ("model:\n  model_selector_output: bert-base-uncased\n", "FTC513", "model.model_selector_output"),
        ("resources:\n  compute: gpu-cluster\n  instance_type: Standard_NC6\n", "FTC514", "resources.instance_type"),
        ("env:\n  secrets: [HF_TOKEN]\n", "FTC515", "env.secrets"),
    ],
)
def test_warnings(write: Callable[..., Path], extra: str, rule: str, key: str) -> None:
    text = TINY.replace("model: ./models/tiny\n", "") if extra.startswith("model:") else TINY
    spec = write(text + extra)
    findings = [f for f in get_backend("azureml").check(plan_of(spec)) if f.rule != "FTC520"]  # the default ftc source
    assert [(f.rule, f.severity, f.key) for f in findings] == [(rule, "warning", key)]
    compile_azureml(spec)  # warnings do not stop the compile


# --- Azure ML's substitution, and the substituted command trains ----------------------------------


def test_substitution_as_documented() -> None:
    command = "run --a '${{inputs.a}}' $[[--b '${{inputs.b}}']] $[[--c '${{inputs.c}}' --d '${{inputs.d}}']] --o '${{outputs.o}}'"
    assert aml.substitute(command, {"a": 1, "b": "x y"}, {"o": "/out"}) == "run --a '1' --b 'x y'  --o '/out'"
    assert aml.substitute(command, {"a": 1, "c": 2}, {"o": "/out"}) == "run --a '1'   --o '/out'"  # d missing: group dropped
    assert aml.substitute(command, {"a": 1, "c": 2, "d": 3}, {"o": "/o"}) == "run --a '1'  --c '2' --d '3' --o '/o'"
    with pytest.raises(aml.SubstitutionError):
        aml.substitute(command, {}, {"o": "/out"})  # a required input outside $[[ ]] must be bound
    component = good_component()
    assert aml.resolve_inputs(component, {"train": "/t.jsonl"}) == {"lora_r": 8, "apply_lora": "false", "train": "/t.jsonl"}
    with pytest.raises(aml.SubstitutionError, match="required input 'train'"):
        aml.resolve_inputs(component, {})
    with pytest.raises(aml.SubstitutionError, match="no such input"):
        aml.resolve_inputs(component, {"train": "t", "lr": 1})


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spec folder with a tiny BERT classifier and learnable data, compiled for azureml."""
    from tests.runtime.tiny import make_classification_data, make_tiny_classifier

    root = tmp_path_factory.mktemp("aml") / "project"
    make_tiny_classifier(root / "models" / "tiny")
    make_classification_data(root / "data", n_train=240, n_val=60, seed=0)
    (root / "spec.yaml").write_text(TINY + "resources:\n  device: cpu\n")  # trains here, on CPU
    compile_azureml(root / "spec.yaml")
    return root


def data_inputs(root: Path) -> dict[str, str]:
    return {
        "model_selector_output": str(root / "models" / "tiny"),
        "train_file_path": str(root / "data" / "train.jsonl"),
        "validation_file_path": str(root / "data" / "validation.jsonl"),
    }


@pytest.mark.parametrize("with_defaults", [True, False], ids=["defaults-bound", "only-data-given"])
def test_substituted_command_is_the_spec(tiny_project: Path, with_defaults: bool, tmp_path: Path) -> None:
    """Bound to its defaults, or with every optional group dropped, the command gives the runtime the spec's values."""
    from ftc.runtime.config import load_config, parse_args

    folder = tiny_project / "build" / "azureml"
    component = read_yaml(folder / "component.yaml")
    given = data_inputs(tiny_project)
    values = aml.resolve_inputs(component, given) if with_defaults else given
    outputs = {name: str(tmp_path / name) for name in aml.OUTPUTS}
    runtime = aml.substitute(component["command"], values, outputs).split(" && ")[-1]
    argv = shlex.split(runtime)
    assert argv[:3] == ["python", "-m", "ftc.runtime"]
    args = parse_args(argv[3:])
    assert len(args.overrides) == (len(values) + 1)  # + --output_dir
    cfg = load_config(folder / str(args.config), args.overrides, cwd=folder)
    expected = json.loads((folder / "ftc.resolved.json").read_text())
    got = cfg.spec.model_dump(mode="json", exclude={"targets", "lint"})
    for section, params in got.items():
        if not isinstance(params, dict):
            continue
        for name, value in params.items():
            if (section, name) in {("model", "model_selector_output"), ("data", "train_file_path"), ("data", "validation_file_path")}:
                assert value == given[name]
            elif (section, name) == ("checkpointing", "output_dir"):
                assert value == aml.RUN_DIR
            else:
                assert value == expected[section][name], f"{section}.{name}"


@pytest.mark.slow
def test_substituted_command_trains(tiny_project: Path, tmp_path: Path) -> None:
    """The component's command, substituted as Azure ML does and run by bash in the code folder, trains."""
    folder = tiny_project / "build" / "azureml"
    component = read_yaml(folder / "component.yaml")
    values = aml.resolve_inputs(component, {**data_inputs(tiny_project), "max_steps": 30, "save_total_limit": 1})
    outputs = {name: str(tmp_path / "outputs" / name) for name in aml.OUTPUTS}
    for path in outputs.values():
        os.makedirs(path)  # Azure ML creates the output folders before the command runs
    command = aml.substitute(component["command"], values, outputs)
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    run = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    metrics = json.loads((folder / aml.RUN_DIR / "metrics.json").read_text())
    assert metrics["eval_loss"] < metrics["initial_eval_loss"]
    assert metrics["train_runtime"] > 0
    model = Path(outputs["pytorch_model_folder"])
    assert (model / "config.json").is_file() and any(model.glob("*.safetensors"))


# --- a pipeline built in code from the generated component ----------------------------------------


def test_dsl_pipeline_chains_the_component_and_round_trips(write: Callable[..., Path], tmp_path: Path) -> None:
    from azure.ai.ml import Input, dsl, load_component, load_job

    folder = compile_azureml(write(TINY))
    finetune = load_component(source=folder / "component.yaml")
    evaluate = load_component(source=FIXTURES / "evaluate_component.yaml")

    @dsl.pipeline(default_compute="serverless", description="finetune, then evaluate")
    def finetune_and_evaluate(model, train, test):  # type: ignore[no-untyped-def] # the SDK reads annotations
        ft = finetune(model_selector_output=model, train_file_path=train, learning_rate=1e-4, apply_lora="true")
        ft.resources = {"instance_count": 2}
        ft.distribution = {"type": "pytorch", "process_count_per_instance": 2}
        ev = evaluate(mlflow_model=ft.outputs.mlflow_model_folder, test_data=test)
        return {"model": ft.outputs.pytorch_model_folder, "evaluation": ev.outputs.evaluation_result}

    job = finetune_and_evaluate(
        model=Input(type="uri_folder", path="azureml:tiny-model:1"),
        train=Input(type="uri_file", path="azureml:train:1"),
        test=Input(type="uri_file", path="azureml:test:1"),
    )
    result = job._validate()
    assert result.passed, result.error_messages
    dumped = tmp_path / "job.yaml"
    job.dump(dumped)
    loaded = load_job(source=dumped)
    result = loaded._validate()
    assert result.passed, result.error_messages
    assert set(loaded.jobs) == {"ft", "ev"}
    ft = loaded.jobs["ft"]
    assert ft.inputs["learning_rate"]._data == 1e-4 and ft.resources.instance_count == 2
    assert "parent.jobs.ft.outputs.mlflow_model_folder" in str(loaded.jobs["ev"].inputs["mlflow_model"]._data)


def test_dsl_pipeline_reports_a_missing_required_input(write: Callable[..., Path]) -> None:
    from azure.ai.ml import Input, dsl, load_component

    finetune = load_component(source=compile_azureml(write(TINY)) / "component.yaml")

    @dsl.pipeline(default_compute="serverless")
    def only_model(model):  # type: ignore[no-untyped-def]
        finetune(model_selector_output=model)

    result = only_model(model=Input(type="uri_folder", path="azureml:m:1"))._validate()
    assert not result.passed and "train_file_path" in str(result.error_messages)


# --- submit -----------------------------------------------------------------------------------------


def no_credentials_env(home: Path) -> dict[str, str]:
    """This interpreter's environment without any Azure credential: no AZURE_*/MSI variables, no az, a bare HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZUREML_", "MSI_", "IDENTITY_", "IMDS_"))}
    env["HOME"] = str(home)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin"
    env["PYTHONPATH"] = str(REPO)
    env.pop("AZURE_CONFIG_DIR", None)
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftc.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_submit_without_credentials_fails_fast_and_clearly(write: Callable[..., Path], tmp_path: Path) -> None:
    workspace = "targets:\n  azureml:\n    subscription_id: 00000000-0000-0000-0000-000000000000\n    resource_group: rg\n    workspace_name: ws\n"
    spec = write(TINY + workspace)
    home = tmp_path / "home"
    home.mkdir()
    started = time.monotonic()
    out = run_cli(["submit", str(spec), "--target", "azureml"], no_credentials_env(home), spec.parent)
    assert time.monotonic() - started < 120
    assert out.returncode == 2, out.stderr
    assert "error: no Azure credentials were found" in out.stderr
    assert "az login" in out.stderr and "Traceback" not in out.stderr


def test_submit_without_workspace(write: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = compile_azureml(write(TINY))
    for name in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AzuremlSubmitError, match="no Azure ML workspace"):
        submit_pipeline(folder, [])
    with pytest.raises(AzuremlSubmitError, match="is not a workspace id"):
        submit_pipeline(folder, [], address="my-workspace")


def test_submit_credential_check_in_process(write: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same refusal when called directly, with the workspace from --address."""
    folder = compile_azureml(write(TINY))
    for key in list(os.environ):
        if key.startswith(("AZURE_", "AZUREML_", "MSI_", "IDENTITY_", "IMDS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    address = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
    started = time.monotonic()
    with pytest.raises(AzuremlSubmitError, match="no Azure credentials were found"):
        submit_pipeline(folder, ["--lr", "1e-4"], address=address, timeout=60)
    assert time.monotonic() - started < 60


def test_workspace_sources() -> None:
    address = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
    assert workspace_of({}, address, {}) == {"subscription_id": "s", "resource_group": "rg", "workspace_name": "ws"}
    env = {"AZURE_SUBSCRIPTION_ID": "s2", "AZURE_RESOURCE_GROUP": "rg2", "AZUREML_WORKSPACE_NAME": "ws2"}
    assert workspace_of({"workspace_name": "mine"}, None, env) == {"subscription_id": "s2", "resource_group": "rg2", "workspace_name": "mine"}
    assert workspace_of({}, None, {"AZURE_SUBSCRIPTION_ID": "s"}) is None


def test_runtime_arguments_become_job_inputs(write: Callable[..., Path]) -> None:
    component = read_yaml(compile_azureml(write(TINY)) / "component.yaml")
    got = _job_input_overrides(component, ["--lr", "1e-4", "--apply_lora", "--tracking.wandb_config.project=p", "--num_epochs", "3"])
    assert got == {"learning_rate": "1e-4", "apply_lora": "true", "wandb_config_project": "p", "num_train_epochs": "3"}
    with pytest.raises(AzuremlSubmitError, match="--output_dir is not an input"):
        _job_input_overrides(component, ["--output_dir", "x"])


def test_prepared_job_binds_runtime_arguments(write: Callable[..., Path]) -> None:
    """What submit hands to MLClient: pipeline.yaml with --<parameter> VALUE bound, typed, and valid."""
    folder = compile_azureml(write(TINY))
    job = prepare_job(folder, ["--lr", "1e-4", "--num_train_epochs", "2", "--apply_lora", "--train_file_path", "azureml:train:3"])
    inputs = job._to_dict()["jobs"][aml.STEP]["inputs"]
    assert inputs["learning_rate"] == 1e-4 and inputs["num_train_epochs"] == 2 and inputs["apply_lora"] == "true"
    assert inputs["train_file_path"]["path"] == "azureml:train:3"
    with pytest.raises(AzuremlSubmitError, match="--seed 'x': the input is of type integer"):
        prepare_job(folder, ["--seed", "x"])


# --------------------------------------------------------------------------- docs in the seeds' layout


@pytest.mark.parametrize("task", ["text_classification", "question_answering", "causal_lm"])
def test_component_docs_document_the_compiled_component(write: Callable[..., Path], task: str) -> None:
    from ftc.spec.docs import format_value
    from tests.spec.test_docs import by_name, parse_inputs, parse_outputs

    page = get_backend("azureml").task_docs(task)
    component = read_yaml(compile_azureml(write(f"task: {task}\nmodel: model\ndata:\n  preprocess_output: data\n")) / "component.yaml")
    headings = re.findall(r"^### (\w+)\n\n(.+)$", page, re.M)
    assert headings == [
        ("Name", f"{task}_finetune"), ("Version", "0.0.1"), ("Type", "command"), ("Description", component["description"]),
    ]
    rows = by_name(parse_inputs(page))
    assert list(rows) == list(component["inputs"])  # every input, in the component's order, nothing else
    for name, spec_ in component["inputs"].items():
        row = rows[name]
        assert (row.type, row.optional) == (spec_["type"], str(spec_.get("optional", False))), name
        assert row.default == format_value(spec_.get("default")), name
        assert row.enum == (str(spec_["enum"]) if spec_.get("enum") else ""), name
    assert parse_outputs(page) == {n: o["type"] for n, o in component["outputs"].items()}


def test_docs_format_on_the_command_line() -> None:
    ftc = [sys.executable, "-m", "ftc.cli", "docs", "--task", "question_answering"]
    done = subprocess.run([*ftc, "--format", "azureml"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("## Question Answering Finetune\n\n### Name\n\nquestion_answering_finetune\n")
    bad = subprocess.run([*ftc, "--format", "slurm"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown docs format 'slurm'; formats: tables, azureml" in bad.stderr
