"""The Azure ML artifacts of a plan as plain data, the checks the SDK does not make, and Azure ML's substitution.

- `component_inputs(plan)` decides the component's inputs: one per spec parameter a user may tune for the
  task (names, types, enums and descriptions from `ftc.spec.docs`, the logic behind `ftc docs --task`),
  defaults from the resolved spec, data and model inputs as `uri_folder` / `uri_file`. Azure ML pastes
  a value between the command's single quotes as it is, so a default is written only when that word
  reaches the runtime unchanged (`carried`); any other value reaches it through ftc.resolved.json only.
- `build_component`, `build_pipeline` and `build_conda` give the dicts that the templates serialize.
- `check_component(component)` finds what `load_component(...)._validate()` accepts but Azure ML gets
  wrong: an optional input used without `$[[ ]]`, an enum default outside its enum, unused inputs,
  illegal names, a default of the wrong type, an unquoted value.
- `component_docs(component, inputs)` documents a component in the layout of the Azure ML finetune
  component docs (seeds 001 and 002): `ftc docs --task <task> --format azureml`.
- `resolve_inputs` and `substitute` perform Azure ML's `${{inputs.x}}` / `$[[ ... ]]` substitution, so
  tests can run a component's command exactly as Azure ML would.

Nothing here imports azure: `ftc compile` must not.
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import annotated_types
import yaml
from pydantic import TypeAdapter, ValidationError

from ftc import __version__
from ftc.contract import RUNTIME_MODULE
from ftc.contract import CONFIG_NAME
from ftc.spec.arguments import argument_value as runtime_value  # how the runtime reads a command-line value
from ftc.spec.docs import (
    COLUMNS,
    TASK_TITLES,
    DocParam,
    aml_type,
    enum_values,
    format_value,
    group_intro,
    iter_params,
    markdown_table,
    task_description,
    task_groups,
)
from ftc.spec import env_values
from ftc.spec.keys import leaf_index

if TYPE_CHECKING:
    from ftc.backends.plan import Job, Plan

COMPONENT_SCHEMA = "https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json"
PIPELINE_SCHEMA = "https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json"

# azure.ai.ml/_schema/core/fields.py PythonFuncNameStr (component names) and IOConstants.VALID_KEY_PATTERN
# without its group dots (input and output names).
COMPONENT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
COMPONENT_NAME_MAX = 255
IO_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# The torch that ftc[train] pins (pyproject.toml) and the CUDA major its Linux wheels on PyPI are built for:
# torch 2.13.0 (cp311, manylinux_2_28_x86_64) requires cuda-toolkit==13.0.3 and nvidia-nccl-cu13 (`pip install
# --dry-run --report` of that wheel). The GPU image's CUDA major must be the same: DeepSpeed builds its ops with
# the image's nvcc and refuses a CUDA major other than torch's. Change the three together.
TORCH_VERSION = "2.13.0"
TORCH_CUDA_MAJOR = 13
# Azure ML base images (github.com/Azure/AzureML-Containers README, "Supported Images", March 2026): OpenMPI 5.0,
# Miniconda; the GPU one has CUDA 13.1.1 and cuDNN. Untagged: Azure ML's latest patched build of each.
GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi5.0-cuda13.1-ubuntu24.04"
CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi5.0-ubuntu24.04"
# Where the generated environment installs ftc from, as docs/ci.md does (a git tag per release).
FTC_REPOSITORY = "https://github.com/<org>/ftc"
REPOSITORY_PLACEHOLDER = "<org>"

# Azure VM sizes for serverless compute, by resources.accelerator_type (upper case) and GPUs per VM. Names and GPU
# counts: the VM size lists of Aspire.Hosting.Azure.Kubernetes (AksNodeVmSizes.cs) and Hugging Face's Azure
# hardware page; NVads A10 v5 sizes below NV36 are GPU fractions. A100 means the 80 GB one. V100 sizes (NCv3,
# NDv2) are retired; A10G is AWS's GPU (Azure has A10). DEFAULT_ACCELERATOR serves a spec that names no type.
GPU_INSTANCE_TYPES: dict[str, dict[int, str]] = {
    "A100-80G": {
        1: "Standard_NC24ads_A100_v4",
        2: "Standard_NC48ads_A100_v4",
        4: "Standard_NC96ads_A100_v4",
        8: "Standard_ND96amsr_A100_v4",
    },
    "A100-40G": {8: "Standard_ND96asr_v4"},
    "H100": {1: "Standard_NC40ads_H100_v5", 2: "Standard_NC80adis_H100_v5", 8: "Standard_ND96isr_H100_v5"},
    "H200": {8: "Standard_ND96isr_H200_v5"},
    "A10": {1: "Standard_NV36ads_A10_v5", 2: "Standard_NV72ads_A10_v5"},
    "T4": {1: "Standard_NC4as_T4_v3", 4: "Standard_NC64as_T4_v3"},
}
ACCELERATOR_ALIASES = {"A100": "A100-80G", "A100-80GB": "A100-80G", "A100-40GB": "A100-40G"}
DEFAULT_ACCELERATOR = "A100-80G"

STEP = "finetune"  # the pipeline's node that runs the component
RUN_DIR = "ftc_run"  # the runtime's output_dir inside the job's working directory
OUTPUTS: dict[str, str] = {"pytorch_model_folder": "uri_folder", "mlflow_model_folder": "mlflow_model"}
OUTPUT_DESCRIPTIONS = {
    "pytorch_model_folder": (
        "The best model as chosen by metric_for_best_model (weights, config and tokenizer), and the kept "
        "checkpoints with optimizer, scheduler and random number states."
    ),
    "mlflow_model_folder": "The best finetuned model in MLflow format (when save_as_mlflow_model is true).",
}

# Not component inputs: resources and env belong to the pipeline node (instance_count,
# process_count_per_instance, environment_variables); the outputs replace output_dir.
_NOT_INPUT_SECTIONS = ("resources", "env")
_NOT_INPUTS = {("checkpointing", "output_dir")}
# Folders the job must receive as data, though their spec type is a plain string.
_TYPE_OVERRIDES = {("lora", "from_peft_checkpoint"): "uri_folder"}
_DATA_TYPES = ("uri_folder", "uri_file")
# Data inputs that stand for one another: the one the spec gives is required, the others optional.
_TRAIN_DATA = (("data", "preprocess_output"), ("data", "train_file_path"))

# What Azure ML cannot paste between single quotes faithfully: a quote ends the word; line breaks and
# other control characters, and what looks like its own `${{ }}` / `$[[ ]]` syntax, are not kept as data.
_NOT_ONE_WORD = re.compile(r"['\x00-\x1f\x7f\x85\u2028\u2029]|\$\{\{|\$\[\[|\]\]")
MAX_WORD = 4096  # characters of one value on the command line; longer ones stay in ftc.resolved.json
FROM_CONFIG = "Default: the spec's value, read from ftc.resolved.json (the command line cannot carry it)."

_GROUP_RE = re.compile(r"\$\[\[(.*?)\]\]", re.S)
_REF_RE = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z0-9_.]+)\s*\}\}")


@dataclass(frozen=True)
class ComponentInput:
    """One input of the component and the spec parameter it sets."""

    name: str  # the Azure ML input name (the parameter's primary name, as in the seeds)
    path: tuple[str, ...]  # the spec key it comes from, e.g. ("optimizer", "learning_rate")
    arg: str  # the runtime's command-line name: the leaf (--learning_rate) or the dotted path
    group: str
    spec: dict[str, Any]  # the YAML mapping: type, enum, default, min, max, optional, description

    @property
    def optional(self) -> bool:
        return bool(self.spec.get("optional", False))

    @property
    def is_data(self) -> bool:
        return self.spec["type"] in _DATA_TYPES


# --- inputs --------------------------------------------------------------------------------------


def input_name(p: DocParam) -> str:
    """The Azure ML input name of a parameter: its leaf; nested leaves join with `_` (wandb_config_project)."""
    return p.leaf.replace(".", "_")


def runtime_arg(p: DocParam) -> str:
    """How the runtime names the parameter on its command line: the bare leaf where that is unambiguous."""
    if len(p.path) == 2 and leaf_index().get(p.path[1]) == p.path:
        return p.path[1]
    return ".".join(p.path)


def config_value(config: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The resolved value at `path` in the runtime config (None when absent)."""
    node: Any = config
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def flow_text(value: Any) -> str:
    """A list or mapping as one line of YAML flow text, which the runtime reads back."""
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()


def _bounds(p: DocParam, kind: str) -> dict[str, Any]:
    """min / max of an integer or number input, from the parameter's inclusive (or integer) bounds."""
    out: dict[str, Any] = {}
    for m in p.field.metadata:
        if isinstance(m, annotated_types.Ge):
            out["min"] = m.ge
        elif isinstance(m, annotated_types.Le):
            out["max"] = m.le
        elif kind == "integer" and isinstance(m, annotated_types.Gt):
            out["min"] = m.gt + 1
        elif kind == "integer" and isinstance(m, annotated_types.Lt):
            out["max"] = m.lt - 1
    return out


def _default(kind: str, value: Any) -> Any:
    """The resolved value as the input's default: flags as 'true'/'false', collections as flow text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "string":
        if isinstance(value, (list, dict)):
            return flow_text(value)
        return str(value)
    if kind == "number" and isinstance(value, int):
        return float(value)
    return value


def command_line_problem(text: str) -> str | None:
    """Why `text` cannot be pasted between the command's single quotes, or None when it can."""
    if len(text) > MAX_WORD:
        return f"is longer than {MAX_WORD} characters"
    found = _NOT_ONE_WORD.search(text)
    return None if found is None else f"holds {found.group(0)!r}"


def data_path_problem(value: str, path: tuple[str, ...]) -> str | None:
    """Why Azure ML cannot give the runtime the data at `value`, or None: it pastes the data's mounted
    path, which ends in the data's name, into the command, and the runtime reads that word as YAML."""
    problem = command_line_problem(value)
    if problem is not None:
        return problem
    mounted = "/mnt/" + posixpath.basename(value.rstrip("/"))
    if runtime_value(mounted, path) != mounted:
        return "has a name that the runtime would not read back as a path (': ' or ' #' in it)"
    return None


def carried(text: str, value: Any, p: DocParam) -> bool:
    """Whether the default `text`, substituted into the command, gives the runtime `value` back:
    it is one quoted word, and the runtime reads it (as YAML, then as the parameter's type) as `value`."""
    if command_line_problem(text) is not None:
        return False
    read = runtime_value(text, p.path)
    if read == value:
        return True
    try:
        return bool(TypeAdapter(Annotated[p.field.annotation, p.field]).validate_python(read) == value)
    except ValidationError:
        return False


def _given_data(plan: Plan) -> set[tuple[str, ...]]:
    return {path for path in _TRAIN_DATA if config_value(plan.config, path)}


def component_inputs(plan: Plan) -> list[ComponentInput]:
    """The component's inputs, in the order of the Azure ML docs (groups, then the seeds' order)."""
    task = str(plan.spec.task)
    given_data = _given_data(plan)
    out: list[ComponentInput] = []
    for group, params in task_groups(task).items():
        for p in params:
            if p.section in _NOT_INPUT_SECTIONS or p.path in _NOT_INPUTS:
                continue
            kind = _TYPE_OVERRIDES.get(p.path) or aml_type(p)
            if kind in _DATA_TYPES:
                spec, note = {"type": kind, "optional": _optional_data(p.path, given_data)}, ""
            else:
                spec, note = _value_spec(plan, p, kind, task)
            # Aliases are names in a spec file, not Azure ML inputs: the note about them is left out.
            description = " ".join(filter(None, [task_description(p).split(" Also accepted as:")[0], note]))
            if description:
                spec["description"] = description
            out.append(ComponentInput(input_name(p), p.path, runtime_arg(p), group, spec))
    return out


def _optional_data(path: tuple[str, ...], given_data: set[tuple[str, ...]]) -> bool:
    """Data inputs are required for the model and the training data the spec gives (else preprocess_output)."""
    if path in _TRAIN_DATA and not given_data:
        return path != _TRAIN_DATA[0]
    return not (path == ("model", "model_selector_output") or path in given_data)


def _value_spec(plan: Plan, p: DocParam, kind: str, task: str) -> tuple[dict[str, Any], str]:
    """An optional value input (enum, default, bounds), and a note when its default cannot be written."""
    spec: dict[str, Any] = {"type": kind}
    enum = enum_values(p, task)
    if enum is not None:
        spec["enum"] = [str(v) for v in enum]
    value = config_value(plan.config, p.path)
    default = _default(kind, value)
    note = ""
    if default is not None and (kind != "string" or carried(default, value, p)):
        spec["default"] = default
    elif default is not None:
        note = FROM_CONFIG
    if kind in ("integer", "number"):
        spec.update(_bounds(p, kind))
    spec["optional"] = True
    return spec, note


def component_docs(component: Mapping[str, Any], inputs: list[ComponentInput]) -> str:
    """The component as the Azure ML finetune component docs show one: Name, Version, Type and
    Description, its inputs in groups (Name | Description | Type | Default | Optional | Enum), its outputs."""
    params = {p.path: p for p in iter_params()}
    out = [f"## {component['display_name']}\n"]
    for heading, key in (("Name", "name"), ("Version", "version"), ("Type", "type"), ("Description", "description")):
        out.append(f"### {heading}\n\n{component[key]}\n")
    out.append("## Inputs\n")
    groups: dict[str, list[ComponentInput]] = {}
    for i in inputs:
        groups.setdefault(i.group, []).append(i)
    for group, members in groups.items():
        out.append(f"{group}\n")
        intro = group_intro(group, [params[i.path] for i in members])
        if intro:
            out.append(f"{intro}\n")
        rows = [
            (
                i.name,
                i.spec.get("description", ""),
                i.spec["type"],
                format_value(i.spec.get("default")),
                str(i.optional),
                str(i.spec["enum"]) if i.spec.get("enum") else "",
            )
            for i in members
        ]
        out.append(markdown_table(COLUMNS, rows))
    out.append("## Outputs\n")
    rows = [(name, o["description"], o["type"]) for name, o in component["outputs"].items()]
    out.append(markdown_table(("Name", "Description", "Type"), rows))
    return "\n".join(out)


# --- the command ---------------------------------------------------------------------------------


def quote(ref: str) -> str:
    """A data binding as one single-quoted shell word, as the Azure ML components write them."""
    return f"'${{{{{ref}}}}}'"


def _export_word(value: str) -> str:
    """The bash word of an env.vars value with references; a `]]` in it is split (`]""]`), so Azure ML does
    not read it as the end of a `$[[ ]]` group (the word is double-quoted: it has references)."""
    return re.sub(r"\](?=\])", ']""', env_values.to_bash(value))


def runtime_command(inputs: list[ComponentInput], env: tuple[tuple[str, str], ...] = ()) -> str:
    """The shared runtime with every input, optional ones in `$[[ ]]`, every value single-quoted.

    The runtime writes `<output_dir>/pytorch_model_folder` and `<output_dir>/mlflow_model_folder`; the
    component's two outputs are separate folders, so `output_dir` is a local folder whose two
    sub-folders are links to them (`metrics.json` and the log stay in that local folder). env.vars values
    that refer to other variables are exported first, by bash, which expands them on the node.
    """
    exports = [f"export {name}={_export_word(value)}" for name, value in expanded_env(env).items()]
    links = [*exports, f"mkdir -p {RUN_DIR}"] + [f"ln -sfn {quote('outputs.' + o)} {RUN_DIR}/{o}" for o in OUTPUTS]
    words = ["python", "-m", RUNTIME_MODULE, "--config", CONFIG_NAME, "--output_dir", RUN_DIR]
    for i in inputs:
        word = f"--{i.arg} {quote('inputs.' + i.name)}"
        words.append(f"$[[{word}]]" if i.optional else word)
    return " && ".join([*links, " ".join(words)])


# --- the component, the pipeline, the environment ------------------------------------------------


def legal_component_name(name: str) -> str:
    """`name` made acceptable to Azure ML: lower case, `_` for anything else, starting with a letter."""
    text = re.sub(r"[^a-z0-9_]", "_", name.lower())
    if not text or not text[0].isalpha():
        text = "ftc_" + text
    return text[:COMPONENT_NAME_MAX]


def component_name(plan: Plan) -> str:
    explicit = getattr(plan.options, "component_name", None)
    return str(explicit) if explicit else legal_component_name(plan.name)


def literal_env(env: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """env.vars values without references: the pipeline node's environment_variables, which Azure ML sets as they are."""
    return {name: value for name, value in env if not env_values.references(value)}


def expanded_env(env: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """env.vars values with `$NAME` / `${NAME}` references: exported by the command, so bash expands them on the node."""
    return {name: value for name, value in env if env_values.references(value)}


def image(plan: Plan) -> str:
    """The generated environment's base image: targets.azureml.image, else the CUDA image for a GPU job, the CPU one else."""
    chosen = getattr(plan.options, "image", None)
    return str(chosen) if chosen else GPU_IMAGE if plan.job.device == "gpu" else CPU_IMAGE


def environment_ref(plan: Plan) -> Any:
    """A registered environment by reference, else an image with the generated conda file."""
    opts = plan.options
    if getattr(opts, "environment", None):
        return opts.environment  # type: ignore[attr-defined]
    return {"image": image(plan), "conda_file": "./environment/conda.yaml"}


def build_component(plan: Plan, inputs: list[ComponentInput] | None = None) -> dict[str, Any]:
    """The command component as a dict in the key order of the Azure ML components (params-inventory §3a)."""
    opts: Any = plan.options
    inputs = component_inputs(plan) if inputs is None else inputs
    task = str(plan.spec.task)
    title = TASK_TITLES.get(task, task.replace("_", " ").title())
    description = plan.spec.description or (
        f"Finetunes a pretrained model for {title.lower()} with the ftc runtime (`python -m {RUNTIME_MODULE}`), "
        "from the resolved spec shipped with the component; every input overrides the spec's value."
    )
    return {
        "$schema": COMPONENT_SCHEMA,
        "name": component_name(plan),
        "version": str(opts.component_version),
        "type": "command",
        "display_name": opts.display_name or f"{title} Finetune",
        "description": description,
        "is_deterministic": bool(opts.is_deterministic),
        "tags": {"generated_by": f"ftc {__version__}", "spec_sha256": plan.resolved.doc.sha256},
        "code": ".",
        "environment": environment_ref(plan),
        "distribution": {"type": "pytorch"},
        "inputs": {i.name: i.spec for i in inputs},
        "outputs": {
            name: {"type": kind, "description": OUTPUT_DESCRIPTIONS[name]} for name, kind in OUTPUTS.items()
        },
        "command": runtime_command(inputs, plan.job.env),
    }


def data_path(value: str, base_dir: str) -> str:
    """A spec path as the pipeline file sees it: URIs and absolute paths as they are, others from base_dir."""
    if "://" in value or value.startswith("azureml:") or os.path.isabs(value):
        return value
    return posixpath.normpath(posixpath.join(base_dir.replace(os.sep, "/"), value))


def output_mode(plan: Plan) -> str:
    return "rw_mount" if plan.options.output_mode == "mount" else "upload"  # type: ignore[attr-defined]


def compute_setting(plan: Plan) -> str:
    compute = plan.options.compute
    if not compute or compute == "serverless":
        return "serverless"
    return compute if compute.startswith("azureml:") else f"azureml:{compute}"


def accelerator(job: Job) -> str:
    """The Job's GPU type as a key of GPU_INSTANCE_TYPES (DEFAULT_ACCELERATOR when the spec names none)."""
    name = (job.accelerator_type or DEFAULT_ACCELERATOR).upper()
    return ACCELERATOR_ALIASES.get(name, name)


def gpu_instance_type(job: Job) -> str | None:
    """The Azure VM size with the Job's GPU type and GPUs per node; None for a CPU job or one the table lacks."""
    if job.device != "gpu" or job.gpus_per_node == 0:
        return None
    return GPU_INSTANCE_TYPES.get(accelerator(job), {}).get(job.gpus_per_node)


def instance_type(plan: Plan) -> str | None:
    """The serverless VM size: targets.azureml.instance_type, else the GPU size of the Job; None on a named cluster."""
    if compute_setting(plan) != "serverless":
        return None
    return plan.options.instance_type or gpu_instance_type(plan.job)


def build_pipeline(plan: Plan, inputs: list[ComponentInput] | None = None) -> dict[str, Any]:
    """A pipeline job running the component on the Job's compute, nodes and processes per node."""
    opts: Any = plan.options
    inputs = component_inputs(plan) if inputs is None else inputs
    job = plan.job
    base_dir = str(plan.config["base_dir"])
    job_inputs: dict[str, Any] = {}
    for i in inputs:
        value = config_value(plan.config, i.path)
        if i.is_data and value:
            job_inputs[i.name] = {"type": i.spec["type"], "path": data_path(str(value), base_dir)}
    mode = output_mode(plan)
    resources: dict[str, Any] = {"instance_count": job.nodes}
    vm_size = instance_type(plan)
    if vm_size:
        resources["instance_type"] = vm_size
    node: dict[str, Any] = {
        "type": "command",
        "component": "./component.yaml",
        "inputs": {name: f"${{{{parent.inputs.{name}}}}}" for name in job_inputs},
        "outputs": {name: f"${{{{parent.outputs.{name}}}}}" for name in OUTPUTS},
        "resources": resources,
        "distribution": {"type": "pytorch", "process_count_per_instance": job.processes_per_node},
    }
    if literal_env(job.env):
        node["environment_variables"] = literal_env(job.env)
    job: dict[str, Any] = {
        "$schema": PIPELINE_SCHEMA,
        "type": "pipeline",
        "display_name": opts.display_name or plan.name,
        "experiment_name": opts.experiment_name or plan.spec.tracking.experiment_name or legal_component_name(plan.name),
        "description": plan.spec.description or f"Finetune {plan.name} with ftc.",
        "tags": {"generated_by": f"ftc {__version__}", "spec_sha256": plan.resolved.doc.sha256},
        "settings": {"default_compute": compute_setting(plan)},
        "inputs": job_inputs,
        "outputs": {name: {"type": kind, "mode": mode} for name, kind in OUTPUTS.items()},
        "jobs": {STEP: node},
    }
    if not job_inputs:
        del job["inputs"]
    return job


def build_conda(plan: Plan) -> dict[str, Any]:
    """The conda file of the generated environment: Python and pip, then torch (the pin the image's CUDA matches),
    ftc's runtime and MLflow."""
    opts: Any = plan.options
    pip = [f"torch=={TORCH_VERSION}", opts.ftc_requirement, *opts.pip_packages]
    return {
        "name": "ftc-train",
        "channels": ["conda-forge"],
        "dependencies": [f"python={opts.python_version}", "pip", {"pip": pip}],
    }


# --- checks on a component -----------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentProblem:
    """A problem with a component: the rule (an error rule of the azureml target), the field (`name`, `inputs.x`,
    `command`) and why."""

    rule: str
    where: str
    message: str

    @property
    def input(self) -> str | None:
        return self.where.split(".", 1)[1] if self.where.startswith("inputs.") else None


def command_groups(command: str) -> list[str]:
    """The text of each `$[[ ... ]]` group of a command."""
    return _GROUP_RE.findall(command)


def references(text: str, kind: str = "inputs") -> list[str]:
    """The names bound by `${{inputs.x}}` (or outputs) in `text`, in order."""
    return [name for k, name in _REF_RE.findall(text) if k == kind]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def check_component(component: Mapping[str, Any]) -> list[ComponentProblem]:
    """What Azure ML refuses or silently gets wrong, that `load_component(...)._validate()` lets through."""
    problems: list[ComponentProblem] = []
    name = component.get("name")
    if not isinstance(name, str) or not COMPONENT_NAME_RE.match(name) or len(name) > COMPONENT_NAME_MAX:
        problems.append(
            ComponentProblem(
                "FTC501",
                "name",
                f"component name {name!r} is refused by Azure ML: use lower-case letters, digits and '_', "
                f"starting with a letter, at most {COMPONENT_NAME_MAX} characters",
            )
        )
    inputs: Mapping[str, Any] = component.get("inputs") or {}
    outputs: Mapping[str, Any] = component.get("outputs") or {}
    problems += _check_names(inputs, outputs)
    command = str(component.get("command") or "")
    problems += _check_command(command, inputs, outputs)
    for input_name_, spec in inputs.items():
        if isinstance(spec, Mapping):
            problems += _check_default(str(input_name_), spec)
    return problems


def _check_names(inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> Iterator[ComponentProblem]:
    seen: dict[str, str] = {}
    for kind, names in (("inputs", inputs), ("outputs", outputs)):
        for n in names:
            n = str(n)
            if not IO_NAME_RE.match(n):
                yield ComponentProblem(
                    "FTC502",
                    f"{kind}.{n}",
                    f"{kind[:-1]} name {n!r} is refused by Azure ML: use letters, digits and '_', not starting with a digit",
                )
            if n.lower() in seen:
                yield ComponentProblem(
                    "FTC502", f"{kind}.{n}", f"{n!r} and {seen[n.lower()]!r} are the same name to Azure ML (case is ignored)"
                )
            seen.setdefault(n.lower(), n)


def _check_command(command: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> Iterator[ComponentProblem]:
    grouped = {n for g in command_groups(command) for n in references(g)}
    outside = _GROUP_RE.sub(" ", command)
    if "$[[" in outside or "]]" in outside:
        yield ComponentProblem("FTC503", "command", "has an unbalanced $[[ ... ]] group")
    bare = set(references(outside))
    for n, spec in inputs.items():
        optional = bool(spec.get("optional", False)) if isinstance(spec, Mapping) else False
        if optional and n in bare:
            yield ComponentProblem(
                "FTC503",
                f"inputs.{n}",
                f"optional input {n!r} is used outside $[[ ... ]]: when it is not given Azure ML leaves "
                "the argument without a value; wrap it: $[[--" + str(n) + " '${{inputs." + str(n) + "}}']]",
            )
        if n not in bare and n not in grouped:
            yield ComponentProblem("FTC505", f"inputs.{n}", f"input {n!r} is not used by the command: its value would be ignored")
    for n in sorted((bare | grouped) - set(inputs)):
        yield ComponentProblem("FTC505", "command", f"uses ${{{{inputs.{n}}}}} but the component has no input {n!r}")
    for n in sorted(set(references(command, "outputs")) - set(outputs)):
        yield ComponentProblem("FTC505", "command", f"uses ${{{{outputs.{n}}}}} but the component has no output {n!r}")
    for m in _REF_RE.finditer(command):
        before, after = command[max(0, m.start() - 1) : m.start()], command[m.end() : m.end() + 1]
        if before != "'" or after != "'":
            yield ComponentProblem(
                "FTC508",
                f"{m.group(1)}.{m.group(2)}",
                f"{m.group(0)} is not single-quoted in the command: a value with spaces or shell characters would break it",
            )


def _check_default(name: str, spec: Mapping[str, Any]) -> Iterator[ComponentProblem]:
    where = f"inputs.{name}"
    kind = spec.get("type")
    enum = spec.get("enum")
    if "default" not in spec:
        return
    default = spec["default"]
    if kind == "integer" and not _is_int(default):
        if _is_number(default) and float(default).is_integer():
            yield ComponentProblem("FTC506", where, f"integer input {name!r} has the float default {default!r}; write {int(default)}")
        else:
            yield ComponentProblem("FTC506", where, f"integer input {name!r} has the default {default!r}, which is not an integer")
    elif kind == "number" and not _is_number(default):
        yield ComponentProblem("FTC506", where, f"number input {name!r} has the default {default!r}, which is not a number")
    elif kind == "string" and not isinstance(default, str):
        yield ComponentProblem("FTC506", where, f"string input {name!r} has the default {default!r}, which is not a string (quote it)")
    elif kind == "boolean" and not isinstance(default, bool):
        yield ComponentProblem("FTC506", where, f"boolean input {name!r} has the default {default!r}, which is not true or false")
    if enum is not None:
        values = [str(v) for v in enum]
        if str(default) not in values:
            yield ComponentProblem("FTC504", where, f"default {default!r} of {name!r} is not one of its values {values}")
    if kind in ("integer", "number") and _is_number(default):
        lo, hi = spec.get("min"), spec.get("max")
        if lo is not None and default < lo:
            yield ComponentProblem("FTC506", where, f"default {default!r} of {name!r} is below its min {lo}")
        if hi is not None and default > hi:
            yield ComponentProblem("FTC506", where, f"default {default!r} of {name!r} is above its max {hi}")


# --- Azure ML's substitution ---------------------------------------------------------------------


class SubstitutionError(ValueError):
    """A command that Azure ML could not run with the given inputs."""


def resolve_inputs(component: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """The values Azure ML binds: the given ones, else each input's default; required inputs must be given."""
    values: dict[str, Any] = {}
    for name, spec in (component.get("inputs") or {}).items():
        if name in given and given[name] is not None:
            values[name] = given[name]
        elif "default" in spec:
            values[name] = spec["default"]
        elif not spec.get("optional", False):
            raise SubstitutionError(f"required input {name!r} is not given")
    unknown = set(given) - set(component.get("inputs") or {})
    if unknown:
        raise SubstitutionError(f"no such input(s): {', '.join(sorted(unknown))}")
    return values


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def substitute(command: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any] | None = None) -> str:
    """The command Azure ML runs: `$[[ ... ]]` groups whose inputs are not all bound are dropped, then
    every `${{inputs.x}}` / `${{outputs.x}}` is replaced by its value, as documented for optional inputs."""
    outputs = outputs or {}

    def bound(kind: str, name: str) -> bool:
        return name in (inputs if kind == "inputs" else outputs)

    def group(m: re.Match[str]) -> str:
        body = m.group(1)
        refs = _REF_RE.findall(body)
        return body if all(bound(k, n) for k, n in refs) else ""

    text = _GROUP_RE.sub(group, command)

    def value(m: re.Match[str]) -> str:
        kind, name = m.group(1), m.group(2)
        if not bound(kind, name):
            raise SubstitutionError(f"${{{{{kind}.{name}}}}} is used outside $[[ ]] but not given")
        return _text((inputs if kind == "inputs" else outputs)[name])

    return _REF_RE.sub(value, text)
