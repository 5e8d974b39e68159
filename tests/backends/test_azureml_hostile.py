"""Hostile spec values on the azureml target: they stay data, or the compile refuses them by key.

Azure ML pastes each input's value into the component's command between single quotes, as it is.
Every string that reaches the artifacts is set to each hostile value; the artifacts must load (yaml,
azure-ai-ml), the command substituted as Azure ML does must run under bash without running anything
the value says, and the runtime must end up with the value byte for byte: through the command line
when that can carry it, else through ftc.resolved.json. Data paths, which Azure ML always puts on the
command line, are refused instead (FTC517), with a clean error and nothing written.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ftc.backends import _azureml_component as aml
from ftc.backends.azureml import _job_input_overrides
from ftc.compiler.build import compile_spec, task_defaults_plan
from ftc.errors import FtcError, SpecError, SubmitError
from ftc.runtime.config import load_config, parse_args
from ftc.spec import env_values
from ftc.spec.docs import iter_params

REPO = Path(__file__).resolve().parents[2]
TASKS = ("text_classification", "question_answering", "translation", "causal_lm")  # every string input between them

HOSTILE = {
    "command-substitution": "$(touch CANARY)",
    "backticks": "`touch CANARY`",
    "semicolon": "a; touch CANARY",
    "and": "a && touch CANARY",
    "single-quote-breakout": "x'; touch CANARY; echo '",
    "double-quote-breakout": 'x"; touch CANARY; echo "',
    "both-quotes": "it's \"quoted\" # not a comment",
    "newline": "line\ntouch CANARY",
    "crlf": "line\r\ntouch CANARY",
    "binding-look-alike": "${{inputs.learning_rate}}",
    "spaced-binding": "${{ outputs.pytorch_model_folder }}",
    "group-breakout": "']] $(touch CANARY) $[['",
    "yaml-breakout": "x\n  command: touch CANARY",
    "yaml-documents": "x: y\n- z\n---\n!!python/object:os.system",
    "line-separator": "\u2028touch CANARY",
    "next-line": "\u0085touch CANARY",
    "shell-variables": "$HOME ${HOME} %j \\ \\n",
    "yaml-null": "null",
    "yaml-number": "123",
    "yaml-list": "[a, b]",
    "yaml-mapping": "a: b",
    "unicode": "ünïcødé ✓ 中文",
    "very-long": "A" * 5000,
}
# Strings outside the command: names and settings in component.yaml, pipeline.yaml, conda.yaml, workspace.json.
METADATA = (
    ("description",),
    ("resources", "compute"),
    ("resources", "instance_type"),
    ("env", "vars", "HOSTILE"),
    *(
        ("targets", "azureml", name)
        for name in ("display_name", "experiment_name", "component_version", "image", "ftc_requirement",
                     "pip_packages", "subscription_id", "resource_group", "workspace_name")
    ),
)  # fmt: skip
LIST_FIELDS = {p.path for p in iter_params() if "list[" in str(p.field.annotation)}
MOUNT = "/mnt/azureml/cr/j/0/cap/data-capability/wd/INPUT_{name}"


def string_inputs(task: str) -> list[aml.ComponentInput]:
    """The inputs whose value is free text or a path (no enum): what a spec can make hostile."""
    inputs = aml.component_inputs(task_defaults_plan(task, "azureml"))
    return [i for i in inputs if (i.is_data or i.spec["type"] == "string") and "enum" not in i.spec]


def put(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = spec
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = [value] if path in LIST_FIELDS or path == ("targets", "azureml", "pip_packages") else value


def get(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        node = node[key] if isinstance(node, dict) else getattr(node, key)
    return node


def as_spec(path: tuple[str, ...], value: str) -> Any:
    return [value] if path in LIST_FIELDS else value


def base_spec(task: str) -> dict[str, Any]:
    return {
        "task": task,
        "model": {"model_selector_output": "./models/m"},
        "data": {"train_file_path": "data/train.jsonl"},
        "lora": {"apply_lora": True},  # from_peft_checkpoint needs it
    }


def refused_metadata(path: tuple[str, ...], value: str) -> bool:
    """Settings whose own validation refuses the value (tested below): one-line pip requirements, short versions,
    env.vars values with a `$` that is not a reference (FTC147, tested with the spec's rules)."""
    if path[-1] in ("ftc_requirement", "pip_packages"):
        return re.search(r"[\x00-\x1f\x7f\x85\u2028\u2029]", value) is not None
    if path[:2] == ("env", "vars"):
        return env_values.problem(value) is not None
    return path[-1] == "component_version" and len(value) > 64


def mounted(i: aml.ComponentInput, value: str) -> str:
    """The path Azure ML substitutes for a data input: its mount point, ending in the data's name."""
    return MOUNT.format(name=i.name) + "/" + posixpath.basename(value.rstrip("/"))


@dataclass
class HostileBuild:
    """The azureml build of a spec whose every string is `value`, and the data inputs Azure ML would bind."""

    folder: Path
    inputs: list[aml.ComponentInput]
    data_refused: bool  # data paths cannot hold the value: they keep ordinary paths
    given: dict[str, str]

    def carries(self, i: aml.ComponentInput) -> bool:
        return not (i.is_data and self.data_refused)


def compile_hostile(task: str, value: str, root: Path) -> HostileBuild:
    inputs = string_inputs(task)
    data_refused = aml.data_path_problem(value, ("data", "train_file_path")) is not None
    spec = base_spec(task)
    for i in inputs:
        if not (i.is_data and data_refused):
            put(spec, i.path, value)
    for path in METADATA:
        if not refused_metadata(path, value):
            put(spec, path, value)
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    (folder,) = compile_spec(root / "spec.yaml", ["azureml"], root / "build")
    given = {i.name: mounted(i, str(get(spec, i.path))) for i in inputs if i.is_data and has(spec, i.path)}
    return HostileBuild(folder, inputs, data_refused, given)


def has(spec: dict[str, Any], path: tuple[str, ...]) -> bool:
    try:
        get(spec, path)
    except KeyError:
        return False
    return True


def run_command(folder: Path, component: dict[str, Any], given: dict[str, Any], cwd: Path) -> list[str]:
    """Substitute the command as Azure ML does, run it under bash; the argv the runtime got."""
    values = aml.resolve_inputs(component, given)
    outputs = {name: str(cwd / "outputs" / name) for name in aml.OUTPUTS}
    command = aml.substitute(component["command"], values, outputs)
    tools = cwd / "tools"
    tools.mkdir(exist_ok=True)
    stub = '#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGV_OUT"\nprintf "%s" "${HOSTILE-unset}" > "$ARGV_OUT.env"\n'
    (tools / "python").write_text(stub)
    (tools / "python").chmod(0o755)
    argv_out = cwd / "argv"
    env = {"PATH": f"{tools}:/usr/bin:/bin", "ARGV_OUT": str(argv_out), "HOME": str(cwd)}
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return argv_out.read_bytes().decode().split("\0")[:-1]


def runtime_spec(folder: Path, argv: list[str], cwd: Path) -> Any:
    """The spec the runtime runs with, from the argv the command gave it."""
    assert argv[:2] == ["-m", "ftc.runtime"]
    args = parse_args(argv[2:])
    return load_config(folder / str(args.config), args.overrides, cwd=cwd).spec


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_values_stay_data(task: str, value: str, tmp_path: Path) -> None:
    build = compile_hostile(task, value, tmp_path)
    folder = build.folder

    # The artifacts load, hold the metadata as it is, and pass the target's own checks.
    component, pipeline, conda = (
        yaml.safe_load((folder / n).read_text()) for n in ("component.yaml", "pipeline.yaml", "environment/conda.yaml")
    )
    assert json.loads((folder / "workspace.json").read_text())["workspace_name"] == value
    assert component["description"] == value and pipeline["description"] == value
    assert component["display_name"] == value and pipeline["experiment_name"] == value
    assert component["environment"]["image"] == value
    env_var = not refused_metadata(("env", "vars", "HOSTILE"), value)
    literal = env_var and not env_values.references(value)
    assert pipeline["jobs"][aml.STEP].get("environment_variables") == ({"HOSTILE": value} if literal else None)
    assert pipeline["settings"]["default_compute"] == f"azureml:{value}"  # a named cluster: instance_type is dropped
    if not refused_metadata(("targets", "azureml", "pip_packages"), value):
        assert conda["dependencies"][-1]["pip"] == [f"torch=={aml.TORCH_VERSION}", value, value]
    assert aml.check_component(component) == []

    # Every value is in the resolved config byte for byte.
    config = json.loads((folder / "ftc.resolved.json").read_text())
    for i in filter(build.carries, build.inputs):
        assert get(config, i.path) == as_spec(i.path, value), i.path

    # The command, substituted as Azure ML does, runs nothing; the runtime gets every value back.
    argv = run_command(folder, component, build.given, tmp_path)
    assert not list(tmp_path.rglob("CANARY")) and not (REPO / "CANARY").exists()
    exported = (tmp_path / "argv.env").read_text()
    assert exported == (env_values.expand(value, {"HOME": str(tmp_path)}) if env_var and not literal else "unset")
    spec = runtime_spec(folder, argv, tmp_path)
    for i in build.inputs:
        if not i.is_data:
            assert get(spec, i.path) == as_spec(i.path, value), i.path
        elif i.name in build.given:
            assert get(spec, i.path) == build.given[i.name], i.path


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_artifacts_load_with_the_sdk(value: str, tmp_path: Path) -> None:
    from_sdk = pytest.importorskip("azure.ai.ml")
    folder = compile_hostile("text_classification", value, tmp_path).folder
    for source, load in (("component.yaml", from_sdk.load_component), ("pipeline.yaml", from_sdk.load_job)):
        result = load(source=folder / source)._validate()
        assert result.passed, (source, result.error_messages)


def test_values_the_command_line_cannot_carry_have_no_default(tmp_path: Path) -> None:
    """Such an input stays optional without a default: Azure ML drops its $[[ ]] group, the config has the value."""
    spec = base_spec("text_classification") | {"data": {"train_file_path": "t.jsonl", "sentence1_key": "it's", "label_key": "lbl"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (folder,) = compile_spec(tmp_path / "spec.yaml", ["azureml"], tmp_path / "build")
    inputs = yaml.safe_load((folder / "component.yaml").read_text())["inputs"]
    assert "default" not in inputs["sentence1_key"] and inputs["sentence1_key"]["optional"] is True
    assert inputs["sentence1_key"]["description"].endswith(aml.FROM_CONFIG)
    assert inputs["label_key"]["default"] == "lbl" and aml.FROM_CONFIG not in inputs["label_key"]["description"]


DATA_REFUSED = {k: v for k, v in HOSTILE.items() if aml.data_path_problem(v, ("data", "train_file_path"))}


@pytest.mark.parametrize("task", ["text_classification", "causal_lm"])
@pytest.mark.parametrize("value", list(DATA_REFUSED.values()), ids=list(DATA_REFUSED))
def test_data_paths_the_command_cannot_carry_are_refused(task: str, value: str, tmp_path: Path) -> None:
    out = tmp_path / "build"
    for i in (i for i in string_inputs(task) if i.is_data):
        spec = base_spec(task)
        put(spec, i.path, value)
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        with pytest.raises(SpecError, match=rf"spec.yaml:\d+:\d+: {'.'.join(i.path)}: .*Azure ML cannot pass .*\[FTC517\]"):
            compile_spec(tmp_path / "spec.yaml", ["azureml"], out)
        assert not out.exists()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("data", "train_file_path"), "data/it's.jsonl", r"data.train_file_path: holds \"'\".*\[FTC517\]"),
        (("model", "model_selector_output"), "models/a\nb", r"model.model_selector_output: holds '\\n'.*\[FTC517\]"),
        (("targets", "azureml", "pip_packages"), "x\n--index-url http://evil", r"targets.azureml.pip_packages.0: must be one line"),
        (("targets", "azureml", "ftc_requirement"), "ftc\u2028--pre", r"targets.azureml.ftc_requirement: must be one line"),
        (("targets", "azureml", "component_version"), "1" * 65, r"targets.azureml.component_version: .*at most 64"),
    ],
    ids=["quote-in-data-name", "newline-in-model-path", "pip-newline", "pip-line-separator", "long-version"],
)  # fmt: skip
def test_refusals_are_clean_on_the_command_line(path: tuple[str, ...], value: str, message: str, tmp_path: Path) -> None:
    spec = base_spec("text_classification")
    put(spec, path, value)
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [sys.executable, "-m", "ftc.cli", "compile", "spec.yaml", "-t", "azureml", "-o", "build"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.returncode in (1, 2), done.stderr
    assert "Traceback" not in done.stderr
    assert any(re.search(message, line) for line in done.stderr.splitlines()), done.stderr
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("value", ["x'; touch CANARY; echo '", "a\nb", "${{inputs.seed}}", "\u2028", "A" * 5000])
def test_submit_refuses_what_the_command_line_cannot_carry(value: str) -> None:
    component = aml.build_component(task_defaults_plan("text_classification", "azureml"))
    with pytest.raises(SubmitError, match=r"--sentence1_key: the value .* cannot pass on the component's command line"):
        _job_input_overrides(component, ["--sentence1_key", value])
    assert _job_input_overrides(component, ["--sentence1_key", "$(touch CANARY)"]) == {"sentence1_key": "$(touch CANARY)"}


# --- generated strings, on every target ---------------------------------------------------------

FRAGMENTS = ["'", '"', "`", "$(", ")", "${{", "}}", "$[[", "]]", ";", "&&", "|", "\n", "\r", "\u2028", "\\", "#", ": ", "- ", " ", "touch CANARY"]
hostile_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), min_size=1, max_size=8).map("".join)
GENERATED_FIELDS = (("data", "sentence1_key"), ("model", "tokenizer_name"), ("tracking", "wandb_config", "project"), ("lora", "target_modules"))


@settings(max_examples=40, deadline=None)
@given(value=hostile_text, field=st.sampled_from(GENERATED_FIELDS))
def test_generated_strings_stay_data_on_every_target(value: str, field: tuple[str, ...]) -> None:
    """On every target the value reaches the resolved config byte for byte (or the compile refuses it
    cleanly, writing nothing), the scripts parse, and the Azure ML command, substituted, runs nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = base_spec("text_classification")
        put(spec, field, value)
        (root / "spec.yaml").write_text(yaml.safe_dump(spec))
        try:
            folders = compile_spec(root / "spec.yaml", ["all"], root / "build")
        except FtcError:
            assert not (root / "build").exists()
            return
        for folder in folders:
            assert get(json.loads((folder / "ftc.resolved.json").read_text()), field) == as_spec(field, value), folder.name
            for script in [*folder.glob("*.sh"), *folder.glob("*.sbatch")]:
                subprocess.run(["bash", "-n", str(script)], check=True)
            for data in folder.rglob("*.yaml"):
                yaml.safe_load(data.read_text())
        azureml = root / "build" / "azureml"
        component = yaml.safe_load((azureml / "component.yaml").read_text())
        argv = run_command(azureml, component, {"model_selector_output": "/mnt/m", "train_file_path": "/mnt/t/train.jsonl"}, root)
        assert not list(root.rglob("CANARY"))
        assert get(runtime_spec(azureml, argv, root), field) == as_spec(field, value)
