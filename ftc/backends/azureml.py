"""The azureml target: a command component with the seeds' input names, a pipeline job around it, an environment.

`component.yaml` is a command component whose inputs are the spec's parameters (names, types, enums
and descriptions as in the Azure ML finetune components, defaults from the resolved spec) and whose
command runs the shared runtime on `ftc.resolved.json`, shipped in the component's code folder (the
build folder itself). `pipeline.yaml` runs it on serverless compute or a named cluster with the spec's
nodes and processes per node. `environment/conda.yaml` installs ftc's runtime when the spec names no
registered environment. `submit` creates the pipeline job with azure-ai-ml's MLClient; azure is
imported there only, never when compiling.

Requests come from the build's Job (ftc/backends/plan.py): `instance_count` = resources.nodes,
`distribution: pytorch` with `process_count_per_instance` = resources.processes_per_node. On azureml
`resources.device: auto` means one GPU per process: on serverless compute the node asks for the VM size
with resources.accelerator_type (A100-80G when unset) and processes_per_node GPUs, from the table below;
targets.azureml.instance_type (serverless) or targets.azureml.compute (a named cluster, which decides its VM size)
override it. A GPU job the table cannot size is an error (FTC519) naming what to set. The runtime config
says `device: gpu`, so a job on a VM without CUDA stops with a clear error. `device: cpu` asks for no GPU
VM (Azure ML's default serverless size unless instance_type is set) and uses the CPU image.

| accelerator_type | 1 GPU | 2 GPUs | 4 GPUs | 8 GPUs |
| --- | --- | --- | --- | --- |
| A100-80G (A100) | Standard_NC24ads_A100_v4 | Standard_NC48ads_A100_v4 | Standard_NC96ads_A100_v4 | Standard_ND96amsr_A100_v4 |
| A100-40G | | | | Standard_ND96asr_v4 |
| H100 | Standard_NC40ads_H100_v5 | Standard_NC80adis_H100_v5 | | Standard_ND96isr_H100_v5 |
| H200 | | | | Standard_ND96isr_H200_v5 |
| A10 | Standard_NV36ads_A10_v5 | Standard_NV72ads_A10_v5 | | |
| T4 | Standard_NC4as_T4_v3 | | Standard_NC64as_T4_v3 | |

V100 sizes (NCv3, NDv2) are retired; A10G is AWS's (Azure's is A10).

The environment: unless targets.azureml.environment names a registered one, the component uses the image
`mcr.microsoft.com/azureml/openmpi5.0-cuda13.1-ubuntu24.04` (a GPU job) or
`mcr.microsoft.com/azureml/openmpi5.0-ubuntu24.04` (a CPU job), Azure ML base images, with
`environment/conda.yaml`: Python, then pip installs `torch==2.13.0` (its Linux wheels on PyPI are built
for CUDA 13, the image's CUDA major; they need an NVIDIA driver of the CUDA 13 line, 580 or later),
then ftc from git as docs/ci.md does, `ftc[train] @ git+https://github.com/<org>/ftc@v<version>`
(targets.azureml.ftc_requirement: put your repository or mirror in place of `<org>`; FTC520 warns
until then), then MLflow for the workspace.

env.vars: Azure ML sets a node's `environment_variables` as they are, so values without references go
there; values with `$NAME` / `${NAME}` are exported by the component's command, in bash, before the
runtime starts (`export LD_LIBRARY_PATH="/opt/efa/lib:${LD_LIBRARY_PATH:-}" && ...`), and expand on
the node (empty when unset).

A GPU example, LoRA on an 8B chat model on 2 nodes x 8 GPUs:

```yaml
task: causal_lm
model: /models/Llama-3.1-8B-Instruct
data: {train_file_path: train.jsonl, validation_file_path: valid.jsonl}
lora: {apply_lora: true}
checkpointing: {output_dir: /shared/runs/llama}
resources: {nodes: 2, processes_per_node: 8}
```

compiles to a pipeline node with `resources: {instance_count: 2, instance_type: Standard_ND96amsr_A100_v4}`
and `distribution: {type: pytorch, process_count_per_instance: 8}` on serverless compute; add
`accelerator_type: H100` for Standard_ND96isr_H100_v5, or `compute: my-gpu-cluster` for a cluster.

Azure ML pastes input values into the command between single quotes, as they are. A spec value that
this cannot carry unchanged (a quote, a line break, text the runtime would read as another YAML
value) is not written as a default: the runtime reads it from ftc.resolved.json. Model and data paths
are always on the command line (as mounted paths), so those are refused instead (FTC517), and so are
such values given to `ftc submit`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from ftc import __version__
from ftc.backends import _azureml_component as aml
from ftc.backends.base import Backend, Say, Submitted, quiet
from ftc.backends.plan import Plan
from ftc.errors import SubmitError
from ftc.spec import deepspeed_file
from ftc.spec.fields import Flag, OneLine, Section, param
from ftc.spec.peek import local_path, looks_like_hub_id
from ftc.spec.rules.registry import KeyPath, RuleSet

# Registered environments: azureml:<name>:<version>, azureml:<name>@<label>, or an ARM / registry id.
ENVIRONMENT_REF = re.compile(
    r"^(azureml:[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+|@[A-Za-z0-9_.-]+)"
    r"|azureml://registries/[^/\s]+/environments/[^/\s]+/(versions/[^/\s]+|labels/[^/\s]+)"
    r"|/subscriptions/\S+/environments/[^/\s]+/versions/[^/\s]+)$"
)
WORKSPACE_ID = re.compile(
    r"^/subscriptions/(?P<subscription_id>[^/]+)/resourceGroups/(?P<resource_group>[^/]+)"
    r"/providers/Microsoft\.MachineLearningServices/workspaces/(?P<workspace_name>[^/]+)/?$",
    re.I,
)
WORKSPACE_FILE = "workspace.json"
WORKSPACE_KEYS = ("subscription_id", "resource_group", "workspace_name")
AUTH_SCOPE = "https://management.azure.com/.default"
AUTH_TIMEOUT_S = 60.0
PipRequirement = OneLine  # conda writes each pip requirement as one line of a requirements file


class AzuremlOptions(Section):
    """Settings of the Azure ML target (component.yaml, pipeline.yaml, environment/)."""

    component_name: str | None = param(
        None,
        "Name of the component; default: the spec's name (<task>_finetune) in lower case, other characters as '_'.",
    )
    component_version: str = param("0.0.1", "Version of the component.", min_length=1, max_length=64)
    compute: str | None = param(
        None,
        "Named compute (Azure ML cluster); serverless when unset. Also accepted as resources.compute.",
        name="compute",
        aliases=("compute_finetune",),
    )
    instance_type: str | None = param(
        None,
        "Instance type for serverless compute (Azure ML). Also accepted as resources.instance_type.",
        name="instance_type",
        aliases=("instance_type_finetune",),
    )
    display_name: str | None = param(None, "Display name of the component and the job; default: '<Task> Finetune'.")
    is_deterministic: Flag = param(True, "Whether Azure ML may reuse the outputs of an identical earlier run.")
    environment: str | None = param(
        None,
        "A registered environment (azureml:<name>:<version>, azureml:<name>@latest or "
        "azureml://registries/<registry>/environments/<name>/versions/<version>); when unset, the image "
        "below with the build's environment/conda.yaml.",
    )
    image: str | None = param(
        None,
        f"Base image of the generated environment; default: {aml.GPU_IMAGE} (CUDA {aml.TORCH_CUDA_MAJOR}, as the "
        f"torch=={aml.TORCH_VERSION} wheels) for a GPU job, {aml.CPU_IMAGE} for a CPU one.",
        min_length=1,
    )
    python_version: str = param("3.11", "Python version of the generated environment.", pattern=r"^3\.[0-9]+$")
    ftc_requirement: PipRequirement = param(
        f"ftc[train] @ git+{aml.FTC_REPOSITORY}@v{__version__}",
        "pip requirement that installs ftc's runtime in the generated environment (after torch, pinned); default: "
        "this version's tag from git, as docs/ci.md installs it: put your repository (or mirror) in place of <org>.",
        min_length=1,
    )
    pip_packages: list[PipRequirement] = param(
        description="More pip requirements of the generated environment (MLflow logging to the workspace).",
        default_factory=lambda: ["mlflow", "azureml-mlflow"],
    )
    experiment_name: str | None = param(
        None, "Experiment of the pipeline job; default: tracking.experiment_name, else the spec's name."
    )
    output_mode: Literal["mount", "upload"] = param(
        "mount", "How the outputs are written: mount (rw_mount) or upload at the end. Multi-node needs mount."
    )
    feeds_model_evaluation: Flag = param(
        False,
        "The output feeds an Azure ML model evaluation component; with apply_lora, merge_lora_weights must then be true.",
    )
    subscription_id: str | None = param(None, "Workspace subscription for `ftc submit`; default: config.json or AZURE_SUBSCRIPTION_ID.")
    resource_group: str | None = param(None, "Workspace resource group for `ftc submit`; default: config.json or AZURE_RESOURCE_GROUP.")
    workspace_name: str | None = param(None, "Workspace name for `ftc submit`; default: config.json or AZUREML_WORKSPACE_NAME.")


RULES: RuleSet[Plan] = RuleSet()


class AzuremlBackend(Backend):
    name = "azureml"
    summary = "component.yaml + pipeline.yaml: Azure ML command component (the seeds' input names) and its pipeline job"
    Options = AzuremlOptions
    rules = RULES
    reads_azureml_assets = True  # azureml:// data and models become inputs that Azure ML mounts
    main_artifact = "component.yaml"
    gpu_artifact = "pipeline.yaml"

    def variables(self, plan: Plan) -> dict[str, Any]:
        inputs = aml.component_inputs(plan)
        opts: AzuremlOptions = plan.options  # type: ignore[assignment]
        return {
            "component": aml.build_component(plan, inputs),
            "pipeline": aml.build_pipeline(plan, inputs),
            "conda": aml.build_conda(plan),
            "registered_environment": opts.environment,
            "workspace": {
                "generated_by": plan.generated_by,
                **{key: getattr(opts, key) for key in WORKSPACE_KEYS},
            },
        }

    def task_docs(self, plan: Plan) -> str:
        """The component of a task's defaults (`plan`), in the layout of seeds 001 and 002."""
        inputs = aml.component_inputs(plan)
        return aml.component_docs(aml.build_component(plan, inputs), inputs)

    def submit(
        self, build_dir: Path, args: list[str], address: str | None = None, *, on_output: Say = quiet, on_status: Say = quiet
    ) -> Submitted:
        """Create the pipeline job of `build_dir` in the workspace; `address` may be a workspace ARM id."""
        return submit_pipeline(Path(build_dir), args, address)


# --- checks on the component (aml.check_component; the ids are its problems') ---------------------


# (id, title, what it checks) of each problem aml.check_component reports; all errors.
COMPONENT_RULES = (
    ("FTC501", "illegal component name",
     "Azure ML names components with lower-case letters, digits and '_', starting with a letter."),
    ("FTC502", "illegal input or output name",
     "Input and output names are letters, digits and '_', not starting with a digit, and differ in more than case."),
    ("FTC503", "optional input outside $[[ ]]",
     "An optional input must be used inside a balanced $[[ ... ]] group, or its argument is left without a value."),
    ("FTC504", "enum default outside its enum", "An input's default must be one of its enum values."),
    ("FTC505", "input unused or undeclared",
     "Every input is used by the command, and every ${{inputs.x}} or ${{outputs.x}} is declared."),
    ("FTC506", "default of the wrong type",
     "An input's default has the input's type (integer, number, string, boolean) and lies within its min and max."),
    ("FTC508", "unquoted reference in the command",
     "Each ${{inputs.x}} in the command is single-quoted, so a value with spaces or shell characters stays one "
     "argument."),
)  # fmt: skip


def _component_problems(plan: Plan, rule_id: str) -> Iterator[tuple[KeyPath, str]]:
    """The problems of the plan's component under `rule_id`, at the spec key each comes from."""
    inputs, problems = _checked_component(plan)
    origins = {i.name: i.path for i in inputs}
    for problem in problems:
        if problem.rule == rule_id:
            yield _problem_key(plan, problem, origins), problem.message


for _id, _title, _doc in COMPONENT_RULES:
    RULES.rule(_id, "error", _title, doc=_doc)(functools.partial(_component_problems, rule_id=_id))


# The last plan's component inputs and problems: building a component takes milliseconds, and eight rules read them.
_LAST_CHECKED: dict[int, tuple[Plan, list[aml.ComponentInput], list[aml.ComponentProblem]]] = {}


def _checked_component(plan: Plan) -> tuple[list[aml.ComponentInput], list[aml.ComponentProblem]]:
    """The component inputs of the plan and the problems of its component, worked out once per plan."""
    last = _LAST_CHECKED.get(id(plan))
    if last is None or last[0] is not plan:
        inputs = aml.component_inputs(plan)
        last = (plan, inputs, aml.check_component(aml.build_component(plan, inputs)))
        _LAST_CHECKED.clear()
        _LAST_CHECKED[id(plan)] = last
    return last[1], last[2]


def _problem_key(plan: Plan, problem: aml.ComponentProblem, origins: dict[str, tuple[str, ...]]) -> KeyPath:
    """The spec key behind a component problem: the name's source, the input's parameter, else the target."""
    if problem.where == "name":
        if _options(plan).component_name:
            return ("targets", "azureml", "component_name")
        return ("name",) if plan.spec.name else ("task",)
    if problem.input in origins:
        return origins[problem.input]  # type: ignore[index]
    return ("targets", "azureml")


# --- Azure ML's own rules (seeds 000-002, params-inventory §2) -----------------------------------


@RULES.rule("FTC510", "error", "LoRA adapter for model evaluation")
def _adapter_for_evaluation(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """With feeds_model_evaluation, apply_lora needs merge_lora_weights: the evaluation component loads a full model."""
    lora = plan.spec.lora
    if _options(plan).feeds_model_evaluation and lora.apply_lora and not lora.merge_lora_weights:
        yield ("lora", "merge_lora_weights"), (
            "must be true with apply_lora when the output feeds model evaluation (targets.azureml."
            "feeds_model_evaluation): the evaluation component loads a full model, not an adapter"
        )


@RULES.rule("FTC511", "error", "ZeRO-3 without a consolidated model")
def _zero3_gather(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """A ZeRO stage 3 DeepSpeed config needs stage3_gather_16bit_weights_on_model_save: true (and must be readable
    JSON), or no consolidated model is saved."""
    ds = plan.spec.deepspeed
    path = local_path(plan.resolved.doc.base_dir, ds.deepspeed) if ds.apply_deepspeed and ds.deepspeed else None
    if path is None or not path.is_file():
        return
    config = deepspeed_file.load(path)  # bounded, and never a traceback (deep nesting, odd bytes)
    if isinstance(config, str):
        yield ("deepspeed", "deepspeed"), f"{path.name} is not a readable JSON DeepSpeed config: it {config}"
        return
    zero = config.get("zero_optimization")
    if not isinstance(zero, dict) or str(zero.get("stage")) != "3":
        return
    gather = zero.get("stage3_gather_16bit_weights_on_model_save", zero.get("gather_16bit_weights_on_model_save"))
    if not (gather is True or str(gather).lower() == "true"):
        yield ("deepspeed", "deepspeed"), (
            f"{path.name} uses ZeRO stage 3 without zero_optimization.stage3_gather_16bit_weights_on_model_save: "
            "true, so no consolidated model would be saved; set it to true"
        )


@RULES.rule("FTC512", "error", "multi-node without mounted outputs")
def _multi_node_without_mount(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """Training on several nodes needs output_mode mount."""
    nodes, mode = plan.spec.resources.nodes, _options(plan).output_mode
    if nodes > 1 and mode != "mount":
        yield ("targets", "azureml", "output_mode"), f"is {mode} but multi-node training (nodes: {nodes}) needs mount"


@RULES.rule("FTC513", "warning", "model or tokenizer Azure ML cannot see")
def _model_out_of_sight(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """model_selector_output is a uri_folder (not a hub id), and a local tokenizer_name folder is not shipped."""
    base_dir = plan.resolved.doc.base_dir
    model, tokenizer = plan.spec.model.model_selector_output, plan.spec.model.tokenizer_name
    if looks_like_hub_id(model) and local_path(base_dir, model) is None:
        yield ("model", "model_selector_output"), (
            f"{model!r} looks like a hub id, but model_selector_output is a uri_folder input: give a local "
            "folder (uploaded at submission), an azureml: model or data asset, or a storage URI"
        )
    if tokenizer and local_path(base_dir, tokenizer) is not None and not os.path.isabs(tokenizer):
        yield ("model", "tokenizer_name"), (
            f"{tokenizer!r} is a local folder that is not shipped to Azure ML; put the tokenizer in the model folder"
        )


@RULES.rule("FTC514", "warning", "instance_type with a named cluster")
def _instance_type_with_cluster(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """targets.azureml.instance_type applies to serverless compute only; a named cluster decides its instance type."""
    opts = _options(plan)
    if opts.instance_type and aml.compute_setting(plan) != "serverless":
        yield ("targets", "azureml", "instance_type"), (
            f"applies to serverless compute only; the named cluster {opts.compute!r} decides the instance type"
        )


@RULES.rule("FTC515", "warning", "secrets not forwarded")
def _secrets_not_forwarded(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """env.secrets do not reach Azure ML jobs: read them from the workspace key vault or a connection."""
    if plan.spec.env.secrets:
        yield ("env", "secrets"), (
            "secrets are not forwarded to Azure ML jobs; read them from the workspace key vault or a "
            "workspace connection in the job"
        )


@RULES.rule("FTC516", "error", "environment not a registered reference")
def _environment_reference(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """targets.azureml.environment is azureml:<name>:<version>, azureml:<name>@<label> or a registry or ARM id."""
    env = _options(plan).environment
    if env and not ENVIRONMENT_REF.match(env):
        yield ("targets", "azureml", "environment"), (
            f"{env!r} is not a registered environment reference: use azureml:<name>:<version>, "
            "azureml:<name>@latest or azureml://registries/<registry>/environments/<name>/versions/<version>"
        )


@RULES.rule(
    "FTC517", "error", "data path Azure ML cannot put on the command line",
    doc="Azure ML pastes a data input's mounted path into the command in single quotes: a model or data path holds "
    f"no quote, line break, control character, ${{{{, $[[, ]], ': ' or ' #', and is at most {aml.MAX_WORD} characters.",
)
def _data_path_on_command_line(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    for i in _checked_component(plan)[0]:
        value = aml.config_value(plan.config, i.path)
        problem = aml.data_path_problem(str(value), i.path) if i.is_data and value else None
        if problem:
            yield i.path, (
                f"{problem}, which Azure ML cannot pass to the component's command: it pastes the data's "
                "mounted path, ending in its name, into the command between single quotes; rename the file or folder"
            )


@RULES.rule("FTC518", "error", "CPU training on several nodes")
def _cpu_on_several_nodes(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """Azure ML runs CPU training on a single node only (MPI; seed 000): resources.device cpu needs nodes: 1."""
    if plan.job.device == "cpu" and plan.spec.resources.nodes > 1:
        yield ("resources", "nodes"), "CPU training on Azure ML runs on a single node only (MPI); set nodes: 1 or train on GPUs"


@RULES.rule("FTC519", "error", "GPU job without a GPU VM size")
def _unsized_gpu_job(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """A GPU job on serverless compute needs a VM size: ftc's table has none for this accelerator_type and
    processes_per_node, so targets.azureml.instance_type (or a GPU cluster in targets.azureml.compute) must be set."""
    job = plan.job
    if _options(plan).instance_type or aml.compute_setting(plan) != "serverless":
        return
    if job.device != "gpu" or aml.gpu_instance_type(job):
        return
    kind = aml.accelerator(job)
    sizes = aml.GPU_INSTANCE_TYPES.get(kind)
    known = (
        f"ftc knows {kind} VMs with {', '.join(map(str, sorted(sizes)))} GPU(s)"
        if sizes
        else f"ftc knows the types {', '.join(aml.GPU_INSTANCE_TYPES)}"
    )
    yield ("resources", "accelerator_type") if job.accelerator_type else ("resources", "processes_per_node"), (
        f"no Azure VM size for {job.gpus_per_node} x {kind} GPU(s) per node ({known}): set "
        "targets.azureml.instance_type to a VM size with that many GPUs, or targets.azureml.compute to a GPU cluster"
    )


@RULES.rule("FTC520", "warning", "ftc installed from the placeholder repository")
def _placeholder_ftc_source(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """The generated environment installs ftc from git; targets.azureml.ftc_requirement still names <org>."""
    opts = _options(plan)
    if not opts.environment and aml.REPOSITORY_PLACEHOLDER in opts.ftc_requirement:
        yield ("targets", "azureml", "ftc_requirement"), (
            f"{opts.ftc_requirement!r} is the placeholder of docs/ci.md: set it to where your ftc is "
            f"(ftc[train] @ git+https://github.com/ORG/ftc@v{__version__}, a wheel URL), or use a registered environment"
        )


@RULES.rule("FTC521", "warning", "instance type unlike the job")
def _vm_size_unlike_job(plan: Plan) -> Iterator[tuple[KeyPath, str]]:
    """A VM size of ftc's table whose GPUs differ from processes_per_node (processes share GPUs or GPUs stay
    idle), or that has GPUs while resources.device is cpu."""
    job, instance = plan.job, _options(plan).instance_type
    if not instance or aml.compute_setting(plan) != "serverless":
        return
    gpus = _gpus_of(str(instance))
    wanted = job.gpus_per_node if job.device == "gpu" else 0
    if gpus is not None and gpus != wanted:
        yield ("targets", "azureml", "instance_type"), (
            f"{instance} has {gpus} GPU(s) but the job uses {wanted} per node "
            f"(resources.device {plan.spec.resources.device}, processes_per_node {job.processes_per_node})"
        )


def _options(plan: Plan) -> AzuremlOptions:
    return plan.options  # type: ignore[return-value]


def _gpus_of(vm_size: str) -> int | None:
    """GPUs of a VM size in ftc's table (case as Azure ignores it); None for a size the table does not know."""
    for sizes in aml.GPU_INSTANCE_TYPES.values():
        for gpus, name in sizes.items():
            if name.lower() == vm_size.lower():
                return gpus
    return None


# --- submit ---------------------------------------------------------------------------------------


def workspace_of(options: dict[str, Any], address: str | None, env: dict[str, str]) -> dict[str, str] | None:
    """subscription_id / resource_group / workspace_name from --address (an ARM id), the spec, or the
    environment; None when incomplete (then config.json is tried)."""
    if address:
        m = WORKSPACE_ID.match(address.strip())
        if not m:
            raise SubmitError(
                f"--address {address!r} is not a workspace id "
                "(/subscriptions/<id>/resourceGroups/<group>/providers/Microsoft.MachineLearningServices/workspaces/<name>)"
            )
        return m.groupdict()
    found = {
        "subscription_id": options.get("subscription_id") or env.get("AZURE_SUBSCRIPTION_ID"),
        "resource_group": options.get("resource_group") or env.get("AZURE_RESOURCE_GROUP") or env.get("AZUREML_RESOURCE_GROUP"),
        "workspace_name": options.get("workspace_name") or env.get("AZUREML_WORKSPACE_NAME"),
    }
    return found if all(found.values()) else None  # type: ignore[return-value]


def find_config_json(start: Path) -> Path | None:
    """The standard workspace config: config.json or .azureml/config.json here or in a parent folder."""
    for folder in (start, *start.parents):
        for candidate in (folder / "config.json", folder / ".azureml" / "config.json"):
            if candidate.is_file():
                return candidate
    return None


def _credential(timeout: float) -> Any:
    """A credential that has proven it can get a token, or SubmitError saying what to set up."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise SubmitError("azure-identity is not installed: pip install 'ftc[azureml]' azure-identity") from None
    credential = DefaultAzureCredential()
    result: dict[str, Any] = {}

    def probe() -> None:
        try:
            credential.get_token(AUTH_SCOPE)
            result["ok"] = True
        except Exception as exc:  # noqa: BLE001 - every credential failure is reported the same way
            result["error"] = exc

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    if result.get("ok"):
        return credential
    if "error" in result:
        first = str(result["error"]).strip().splitlines()[0] if str(result["error"]).strip() else type(result["error"]).__name__
        reason = f"no Azure credentials were found ({first})"
    else:
        reason = f"getting an Azure token took longer than {timeout:.0f} s"
    raise SubmitError(
        f"{reason}. Sign in with `az login`, or set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET "
        "for a service principal, or run where a managed identity is available."
    )


def _job_input_overrides(component: dict[str, Any], args: list[str]) -> dict[str, str]:
    """Runtime arguments (`--<parameter> VALUE`) as values of the component's inputs."""
    from ftc.spec.keys import leaf_index

    by_arg: dict[str, str] = {}
    command = str(component.get("command", ""))
    for name in component.get("inputs", {}):
        for m in re.finditer(r"--([A-Za-z0-9_.]+) '\$\{\{inputs\." + re.escape(name) + r"\}\}'", command):
            by_arg[m.group(1)] = name
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise SubmitError(f"unexpected argument {arg!r}; runtime parameters are given as --name value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                value, i = "true", i + 1
            else:
                value, i = args[i + 1], i + 2
        else:
            i += 1
        name = key
        if name not in by_arg and name in leaf_index():
            section, primary = leaf_index()[name]
            name = primary if primary in by_arg else f"{section}.{primary}"
        if name not in by_arg:
            raise SubmitError(
                f"--{key} is not an input of the Azure ML component (outputs and resources are set in pipeline.yaml)"
            )
        problem = aml.command_line_problem(value)
        if problem:
            raise SubmitError(
                f"--{key}: the value {problem}, which Azure ML cannot pass on the component's command line "
                "(it pastes values between single quotes); set it in the spec and compile again"
            )
        out[by_arg[name]] = value
    return out


def typed_value(spec: dict[str, Any], name: str, text: str) -> Any:
    """A command-line value as the input's type: int, float, a data Input, or the text."""
    kind = spec.get("type")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        raise SubmitError(f"--{name} {text!r}: the input is of type {kind}") from None
    if kind in ("uri_file", "uri_folder"):
        from azure.ai.ml import Input

        return Input(type=kind, path=text)
    return text


def prepare_job(build_dir: Path, args: list[str]) -> Any:
    """pipeline.yaml loaded with azure-ai-ml, runtime arguments bound to the node's inputs, validated."""
    import yaml

    try:
        from azure.ai.ml import load_job
    except ImportError:
        raise SubmitError("azure-ai-ml is not installed: pip install 'ftc[azureml]'") from None
    component = yaml.safe_load((build_dir / "component.yaml").read_text(encoding="utf-8"))
    overrides = _job_input_overrides(component, args)
    job = load_job(build_dir / "pipeline.yaml")
    node = job.jobs[aml.STEP]
    for name, text in overrides.items():
        setattr(node.inputs, name, typed_value(component["inputs"][name], name, text))
    result = job._validate()
    if not result.passed:
        raise SubmitError(f"the pipeline job is not valid: {result.error_messages}")
    return job


def submit_pipeline(
    build_dir: Path, args: list[str], address: str | None = None, *, timeout: float | None = None
) -> Submitted:
    """Load pipeline.yaml, bind runtime arguments to inputs, and create the job in the workspace (not waited for).

    SubmitError when there is no workspace or credential, or Azure ML refuses the job.
    """
    options = _spec_options(build_dir)
    workspace = workspace_of(options, address, dict(os.environ))
    config_json = None if workspace else find_config_json(Path.cwd())
    if workspace is None and config_json is None:
        raise SubmitError(
            "no Azure ML workspace: set targets.azureml.subscription_id, resource_group and workspace_name, "
            "or AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZUREML_WORKSPACE_NAME, or put the workspace's "
            "config.json in this folder, or pass --address <workspace ARM id>"
        )
    job = prepare_job(build_dir, args)
    wait = float(os.environ.get("FTC_AZURE_AUTH_TIMEOUT", AUTH_TIMEOUT_S)) if timeout is None else timeout
    credential = _credential(wait)
    from azure.ai.ml import MLClient

    try:
        if workspace is not None:
            client = MLClient(credential, **workspace)
        else:
            client = MLClient.from_config(credential, path=str(config_json))
        created = client.jobs.create_or_update(job, experiment_name=job.experiment_name)
    except Exception as exc:  # noqa: BLE001 - the SDK's errors are many; each is reported with its message
        raise SubmitError(f"Azure ML refused the job: {type(exc).__name__}: {exc}") from None
    url = getattr(created, "studio_url", None) or None
    return Submitted(AzuremlBackend.name, job_id=created.name, job_kind="Azure ML job", where=client.workspace_name, url=url)


def _spec_options(build_dir: Path) -> dict[str, Any]:
    """The workspace the spec names (targets.azureml), as compiled into workspace.json."""
    path = build_dir / WORKSPACE_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: data.get(k) for k in WORKSPACE_KEYS}


BACKEND = AzuremlBackend
