"""Target rules: registered like the spec's, each fires on its case and stays quiet on another; one registry feeds
`ftc docs`, SARIF and lint.ignore, and a third-party target brings its own rules, options and docs."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ftc.backends import _azureml_component as aml
from ftc.backends import registry
from ftc.backends.registry import backends, get_backend
from ftc.compiler.build import compile_spec, findings_for, load_resolved, plan_for
from ftc.spec import model
from ftc.spec.docs import render_rules
from ftc.spec.rules import RULES, Finding, RuleSet

RULE_ID = re.compile(r"FTC\d{3}")
SLURM_GPUS = "targets: {slurm: {gpus_per_node: 2}}\n"
ZERO3 = "deepspeed: {apply_deepspeed: true, deepspeed: zero3.json}\n"
A100_1 = "resources: {instance_type: Standard_NC24ads_A100_v4, processes_per_node: %d}\n"

# rule id -> (spec text that triggers it, a variant that does not); the model and data lines are added unless given.
CASES: dict[str, tuple[str, str]] = {
    "FTC163": ("data: {train_file_path: 'azureml://datastores/d/paths/train.jsonl'}\n", "data: {train_file_path: train.jsonl}\n"),
    "FTC201": ("resources: {nodes: 2}\n", "resources: {nodes: 1}\n"),
    "FTC301": ("resources: {device: cpu}\n" + SLURM_GPUS, "resources: {device: cpu}\n"),
    "FTC302": ("targets: {slurm: {gpus_per_node: 0}}\n", "resources: {device: cpu}\ntargets: {slurm: {gpus_per_node: 0}}\n"),
    "FTC303": ("resources: {processes_per_node: 4}\n" + SLURM_GPUS, "resources: {processes_per_node: 2}\n" + SLURM_GPUS),
    "FTC304": (
        "evaluation: {evaluation_strategy: 'no'}\ntargets: {slurm: {requeue: true}}\n",
        "targets: {slurm: {requeue: true}}\n",
    ),
    "FTC305": (
        "targets: {slurm: {requeue: true, time: '00:01:00', signal_seconds: 120}}\n",
        "targets: {slurm: {requeue: true, time: '01:00:00', signal_seconds: 120}}\n",
    ),
    "FTC306": ("targets: {slurm: {signal_seconds: 10}}\n", "targets: {slurm: {requeue: true, signal_seconds: 10}}\n"),
    "FTC307": ("targets: {slurm: {venv: v, conda_env: c}}\n", "targets: {slurm: {venv: v}}\n"),
    "FTC308": (
        "targets: {slurm: {venv: v, container_image: 'nvcr.io#nvidia/pytorch:24.05-py3'}}\n",
        "targets: {slurm: {container_image: 'nvcr.io#nvidia/pytorch:24.05-py3'}}\n",
    ),
    "FTC309": (
        "targets: {slurm: {container_mounts: ['/a:/a']}}\n",
        "targets: {slurm: {container_mounts: ['/a:/a'], container_image: 'nvcr.io#nvidia/pytorch:24.05-py3'}}\n",
    ),
    "FTC310": ("resources: {device: cpu, accelerator_type: A100}\n", "resources: {accelerator_type: A100}\n"),
    "FTC401": ("resources: {worker_resources: {CPU: -1}}\n", "resources: {worker_resources: {CPU: 1}}\n"),
    "FTC402": ("targets: {ray: {use_gpu: false}}\n", "resources: {device: cpu}\ntargets: {ray: {use_gpu: false}}\n"),
    "FTC403": ("resources: {device: cpu, worker_resources: {GPU: 1}}\n", "resources: {worker_resources: {GPU: 1}}\n"),
    "FTC404": (
        "evaluation: {evaluation_strategy: 'no'}\ntargets: {ray: {max_failures: 2}}\n",
        "targets: {ray: {max_failures: 2}}\n",
    ),
    "FTC405": ("resources: {trainer_resources: {CPU: 1}}\n", "resources: {worker_resources: {CPU: 1}}\n"),
    "FTC406": ("checkpointing: {output_dir: out}\n", "checkpointing: {output_dir: /shared/out}\n"),
    "FTC407": ("targets: {ray: {image: 'me/ftc:1'}}\n", "targets: {ray: {image: 'me/ftc:1', working_dir: 's3://b/p.zip'}}\n"),
    "FTC409": ("resources: {num_devices: 16}\n", "resources: {num_devices: 16, nodes: 2}\n"),
    "FTC410": (
        "resources: {accelerator_type: H100, worker_resources: {'accelerator_type:A10G': 0.001}}\n",
        "resources: {accelerator_type: A10G, worker_resources: {'accelerator_type:A10G': 0.001}}\n",
    ),
    "FTC411": ("resources: {accelerator_type: MI300X}\n", "resources: {accelerator_type: A100-80G}\n"),
    "FTC412": ("data: {train_file_path: big.jsonl}\n", "data: {train_file_path: data/train.jsonl}\n"),
    "FTC413": ("", "model: /models/tiny\n"),
    "FTC414": ("targets: {ray: {working_dir: models}}\n", "targets: {ray: {working_dir: .}}\n"),
    "FTC415": ("data: {train_file_path: rayignored/train.jsonl}\n", "data: {train_file_path: data/train.jsonl}\n"),
    "FTC501": ("targets: {azureml: {component_name: Lora-Finetune}}\n", "targets: {azureml: {component_name: lora_finetune}}\n"),
    "FTC510": (
        "lora: {apply_lora: true, merge_lora_weights: false}\ntargets: {azureml: {feeds_model_evaluation: true}}\n",
        "lora: {apply_lora: true}\ntargets: {azureml: {feeds_model_evaluation: true}}\n",
    ),
    "FTC511": (ZERO3, ZERO3.replace("zero3.json", "zero3_gather.json")),
    "FTC512": ("resources: {nodes: 2}\ntargets: {azureml: {output_mode: upload}}\n", "resources: {nodes: 2}\n"),
    "FTC513": ("model: bert-base-uncased\n", "model: ./models/tiny\n"),
    "FTC514": ("resources: {compute: gpu-cluster, instance_type: Standard_NC6}\n", "resources: {compute: gpu-cluster}\n"),
    "FTC515": ("env: {secrets: [HF_TOKEN]}\n", "env: {vars: {A: b}}\n"),
    "FTC516": ("targets: {azureml: {environment: my-env}}\n", "targets: {azureml: {environment: 'azureml:ftc:1'}}\n"),
    "FTC517": ('data: {train_file_path: "data/it\'s.jsonl"}\n', "data: {train_file_path: data/its.jsonl}\n"),
    "FTC518": ("resources: {device: cpu, nodes: 2}\n", "resources: {device: cpu}\n"),
    "FTC519": ("resources: {accelerator_type: A100-80G, processes_per_node: 3}\n", "resources: {processes_per_node: 2}\n"),
    "FTC520": ("targets: {azureml: {python_version: '3.11'}}\n", "targets: {azureml: {environment: 'azureml:ftc:1'}}\n"),
    "FTC521": (A100_1 % 2, A100_1 % 1),
}
# Rules on the component itself (aml.check_component), which ftc's own components never break: each is shown
# on a component with one fault, against GOOD_COMPONENT.
GOOD_COMPONENT: dict[str, Any] = {
    "name": "ok",
    "inputs": {"a": {"type": "integer", "default": 1}},
    "outputs": {},
    "command": "run --a '${{inputs.a}}'",
}
COMPONENT_CASES: dict[str, dict[str, Any]] = {
    "FTC501": {"name": "Bad-Name"},
    "FTC502": {"inputs": {"a": {"type": "integer"}, "A": {"type": "integer"}}, "command": "run '${{inputs.a}}' '${{inputs.A}}'"},
    "FTC503": {"inputs": {"a": {"type": "integer", "optional": True}}},
    "FTC504": {"inputs": {"a": {"type": "string", "enum": ["x", "y"], "default": "z"}}},
    "FTC505": {"command": "run"},
    "FTC506": {"inputs": {"a": {"type": "integer", "default": 1.5}}},
    "FTC508": {"command": "run --a ${{inputs.a}}"},
}


def _target_of(rule_id: str) -> str:
    """The first target that declares the rule (a shared rule, such as FTC163, is in several)."""
    return next(name for name, backend in backends().items() if rule_id in backend.rules)


def _spec(extra: str) -> str:
    model_line = "" if extra.startswith("model:") else "model: ./models/tiny\n"
    data = "" if "data:" in extra else "data:\n  train_file_path: data/train.jsonl\n  validation_file_path: data/validation.jsonl\n"
    return "task: text_classification\n" + model_line + data + extra


def _found(write_spec: Callable[..., Path], target: str, extra: str, name: str = "spec.yaml") -> list[Finding]:
    spec = write_spec(_spec(extra), name=name)
    return get_backend(target).check(plan_for(load_resolved(spec), target, spec.parent / "build"))


@pytest.fixture
def deepspeed_files(tmp_path: Path) -> None:
    zero3 = {"zero_optimization": {"stage": 3}}
    (tmp_path / "zero3.json").write_text(json.dumps(zero3))
    gathered = {"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}}
    (tmp_path / "zero3_gather.json").write_text(json.dumps(gathered))
    with (tmp_path / "big.jsonl").open("wb") as big:  # sparse: over Ray's upload limit (FTC412) at no cost
        big.truncate(101 * 1024**2)
    (tmp_path / "rayignored").mkdir()
    (tmp_path / "rayignored" / ".rayignore").write_text("*.bin\n")  # Ray applies it on top of the excludes (FTC415)


@pytest.mark.usefixtures("deepspeed_files")
@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_target_rule_fires_and_stays_quiet(rule_id: str, write_spec: Callable[..., Path]) -> None:
    target, (trigger, quiet) = _target_of(rule_id), CASES[rule_id]
    fired = [f for f in _found(write_spec, target, trigger) if f.rule == rule_id]
    assert fired, f"{rule_id} did not fire on:\n{trigger}"
    assert {f.severity for f in fired} <= set(get_backend(target).rules[rule_id].severities)
    assert rule_id not in {f.rule for f in _found(write_spec, target, quiet, "quiet.yaml")}, f"{rule_id} fired on:\n{quiet}"


@pytest.mark.parametrize("rule_id", sorted(COMPONENT_CASES))
def test_component_rule_fires_on_its_fault_only(
    rule_id: str, write_spec: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aml, "build_component", lambda plan, inputs=None: {**GOOD_COMPONENT, **COMPONENT_CASES[rule_id]})
    assert rule_id in {f.rule for f in _found(write_spec, "azureml", "")}
    monkeypatch.setattr(aml, "build_component", lambda plan, inputs=None: GOOD_COMPONENT)
    assert not {f.rule for f in _found(write_spec, "azureml", "")} & set(COMPONENT_CASES)


def test_every_target_rule_has_a_case() -> None:
    declared = {rule_id for backend in backends().values() for rule_id in backend.rules}
    assert declared == set(CASES) | set(COMPONENT_CASES)


@pytest.mark.parametrize(
    ("processes", "severity"), [(4, "error"), (1, "warning")], ids=["processes share GPUs", "GPUs stay idle"]
)
def test_a_rule_of_both_severities_says_which(write_spec: Callable[..., Path], processes: int, severity: str) -> None:
    found = _found(write_spec, "slurm", f"resources: {{processes_per_node: {processes}}}\n" + SLURM_GPUS)
    assert [(f.rule, f.severity) for f in found] == [("FTC303", severity)]


def test_a_rule_must_yield_the_severities_it_declares() -> None:
    rules: RuleSet[str] = RuleSet()

    @rules.rule("FTC991", "error/warning", "either")
    def _either(subject: str) -> Iterator[Any]:
        yield ("a",), "no severity given"

    @rules.rule("FTC992", "warning", "a warning")
    def _warning(subject: str) -> Iterator[Any]:
        yield ("a",), "an error after all", "error"

    with pytest.raises(ValueError, match="FTC991 is declared error/warning: each finding must say which"):
        rules["FTC991"].findings("x").__next__()
    with pytest.raises(ValueError, match="FTC992 is declared warning but a finding says error"):
        rules["FTC992"].findings("x").__next__()
    assert rules.run("x", ignored={"FTC991", "FTC992"}) == []
    with pytest.raises(ValueError, match="registered twice"):
        rules.rule("FTC992", "warning", "again")(_warning)
    with pytest.raises(ValueError, match="is not error, warning or error/warning"):
        rules.rule("FTC993", "fatal", "bad")(_warning)  # type: ignore[arg-type]


def test_lint_ignore_silences_a_target_rule(write_spec: Callable[..., Path]) -> None:
    assert "FTC201" in {f.rule for f in _found(write_spec, "local", "resources: {nodes: 2}\n")}
    ignored = "resources: {nodes: 2}\nlint: {ignore: {FTC201: a test}}\n"
    assert _found(write_spec, "local", ignored, "ignored.yaml") == []


def test_rule_ids_are_unique_and_documented() -> None:
    """An id names one rule: a rule shared by several targets (FTC163) is the same rule in each."""
    rules = list(RULES.values()) + [r for b in backends().values() for r in b.rules.values()]
    ids = [r.id for r in set(rules)]
    assert len(ids) == len(set(ids)), f"rule ids used twice: {sorted({i for i in ids if ids.count(i) > 1})}"
    assert not set(RULES) & {r.id for b in backends().values() for r in b.rules.values()}
    for backend in backends().values():
        for r in backend.rules.values():
            assert RULE_ID.fullmatch(r.id) and r.title.strip() and r.doc.strip(), r


def test_the_rules_page_lists_every_target_rule() -> None:
    page = render_rules()
    for name, backend in backends().items():
        if backend.rules:
            section = page.split(f"## Target `{name}`", 1)[1].split("\n## ", 1)[0]
            assert all(f"| {rule_id} " in section for rule_id in backend.rules), name


# --------------------------------------------------------------------------- a third-party target

PLUGIN = '''
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from ftc.backends.base import Backend
from ftc.spec.fields import Section, param
from ftc.spec.rules.registry import RuleSet

RULES = RuleSet()


class TinyOptions(Section):
    """Settings of the tiny target."""

    path_options: ClassVar[tuple[str, ...]] = ("cache_dir",)
    greeting: str = param("hello", "What to say.")
    cache_dir: str | None = param(None, "A folder next to the spec where the job caches.")


class TinyBackend(Backend):
    """The tiny target: a text file that greets."""

    name = "tiny"
    summary = "greeting.txt: says hello"
    Options = TinyOptions
    template_dir = str(Path(__file__).with_name("templates"))
    rules = RULES
    main_artifact = "greeting.txt"

    def variables(self, plan):
        return {"greeting": plan.options.greeting, "task": plan.spec.task}


@RULES.rule("FTC901", "warning", "a shouted greeting")
def _shouted(plan) -> Iterator[tuple[tuple[str, ...], str]]:
    """The greeting is lower case: nobody likes to be shouted at."""
    if plan.options.greeting != plan.options.greeting.lower():
        yield ("targets", "tiny", "greeting"), "is shouted; write it in lower case"
'''


@pytest.fixture
def tiny_target(tmp_path: Path) -> Iterator[None]:
    """An installed distribution (dist-info, module, templates) whose entry point registers target `tiny`."""
    site = tmp_path / "site"
    (site / "ftc_tiny" / "templates").mkdir(parents=True)
    (site / "ftc_tiny" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    (site / "ftc_tiny" / "templates" / "greeting.txt.j2").write_text("{{ greeting }} {{ task }}\n")
    (site / "ftc_tiny" / "templates" / "other.txt.j2").write_text("listed, not shown\n")
    dist = site / "ftc_tiny-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ftc-tiny\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ftc.backends]\ntiny = ftc_tiny:TinyBackend\n")
    sys.path.insert(0, str(site))
    registry.backends.cache_clear()
    model.spec_model.cache_clear()
    yield
    sys.path.remove(str(site))
    sys.modules.pop("ftc_tiny", None)
    registry.backends.cache_clear()
    model.spec_model.cache_clear()


@pytest.mark.usefixtures("tiny_target")
def test_a_third_party_target_compiles_documents_and_lints(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    from ftc.compiler.target_docs import render_target_docs

    spec = write_spec(_spec("targets: {tiny: {greeting: HI, cache_dir: ../../cache}}\n"))
    resolved = load_resolved(spec)
    found = {f.rule: f for f in findings_for(resolved, [plan_for(resolved, "tiny", tmp_path / "build")])}
    assert (found["FTC901"].severity, found["FTC901"].key) == ("warning", "targets.tiny.greeting")
    assert found["FTC120"].key == "targets.tiny.cache_dir"  # its path option, checked like the spec's paths

    quiet = write_spec(_spec("targets: {tiny: {cache_dir: cache}}\nlint: {ignore: {FTC901: a test}}\n"), name="quiet.yaml")
    (folder,) = compile_spec(quiet, ["tiny"], tmp_path / "build")
    assert (folder / "greeting.txt").read_text() == "hello text_classification\n"

    page = render_target_docs("tiny")
    assert "| FTC901 | warning  | a shouted greeting |" in page
    assert "targets.tiny.cache_dir" in page
    assert "`greeting.txt`:\n\n```\nhello text_classification\n```" in page  # its main artifact, not other.txt
    assert "## Target `tiny`" in render_rules()
