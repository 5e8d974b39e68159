"""Parameter documentation generated from the spec: per-task tables in the Azure ML layout, and the reference.

`render_task_docs(task)` reproduces the "Inputs" and "Outputs" tables of the Azure ML component docs
(seeds 001/002): one table per group, columns Name, Description, Type, Default, Optional and Enum,
with the Azure ML input names and types. `render_reference()` is `docs/parameters.md`: every key of
the spec, by dotted name, section by section. Both read only the pydantic models and their `x-ftc`
metadata, so the docs cannot drift from the schema (a test compares the committed reference).
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ftc.spec.fields import DOC_GROUPS, TASKS, meta_of
from ftc.spec.model import IMPLIED_SWITCHES, SCALAR_SHORTHANDS, SECTION_ALIASES, spec_model

if TYPE_CHECKING:
    from ftc.spec.rules import Rule

REFERENCE_PATH = "docs/parameters.md"
REGENERATE = f"ftc docs > {REFERENCE_PATH}"
COLUMNS = ("Name", "Description", "Type", "Default", "Optional", "Enum")
INPUTS_GROUP = DOC_GROUPS[-1]  # "Data and Model inputs": always the last group
FLAG_ENUM = ["true", "false"]

# Sections that have no place in a task's Azure ML tables (the reference lists them).
_NOT_TASK_SECTIONS = ("lint", "targets")

# The order of the Azure ML component inputs (seeds 001 and 002): rows of a group follow it, and
# parameters it does not name follow them in spec order.
AML_INPUT_ORDER = (
    "apply_lora",
    "merge_lora_weights",
    "lora_alpha",
    "lora_r",
    "lora_dropout",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "auto_find_batch_size",
    "optim",
    "learning_rate",
    "warmup_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "gradient_accumulation_steps",
    "eval_accumulation_steps",
    "lr_scheduler_type",
    "precision",
    "seed",
    "enable_full_determinism",
    "dataloader_num_workers",
    "ignore_mismatched_sizes",
    "max_grad_norm",
    "evaluation_strategy",
    "evaluation_steps_interval",
    "eval_steps",
    "logging_strategy",
    "logging_steps",
    "metric_for_best_model",
    "resume_from_checkpoint",
    "save_total_limit",
    "apply_early_stopping",
    "early_stopping_patience",
    "early_stopping_threshold",
    "apply_deepspeed",
    "deepspeed",
    "apply_ort",
    "save_as_mlflow_model",
    "preprocess_output",
    "model_selector_output",
)

TASK_TITLES = {
    "text_classification": "Text Classification",
    "question_answering": "Question Answering",
    "translation": "Translation",
    "summarization": "Summarization",
    "causal_lm": "Causal Language Modeling",
}

# Paragraphs under the group names of the Azure ML docs.
GROUP_INTROS = {
    "Lora parameters": (
        "LoRA trains pairs of low-rank matrices next to frozen pretrained weights: few trainable parameters, "
        "small adapters to store, and no extra inference latency once merged."
    ),
    "Deepspeed Parameters": (
        "DeepSpeed ZeRO shards optimizer states (stage 2) and parameters (stage 3) across processes. "
        "`apply_deepspeed` must be true to enable it; a `deepspeed` config file alone does not. Without a file, "
        "ftc writes a default config for `deepspeed_stage`."
    ),
    "ONNX Runtime Parameters": "ONNX Runtime training, kept for compatibility with the Azure ML component.",
    "MLFlow Parameters": (
        "An MLflow model packages the finetuned model for deployment where MLflow models are supported "
        "(Azure ML online and batch endpoints among them)."
    ),
    INPUTS_GROUP: "The data and the model to start from.",
}

# How a section is named when its parameters form a group of their own ("<title> parameters").
_SECTION_TITLES = {"fsdp": "FSDP", "ort": "ONNX Runtime", "env": "Environment", "lora": "Lora"}

OUTPUTS = (
    (
        "pytorch_model_folder",
        "Output folder holding the _best_ model as chosen by _metric_for_best_model_ (weights, config and "
        "tokenizer), and the checkpoints saved at each evaluation, as set by _evaluation_strategy_. Each "
        "checkpoint holds the model weights, config, tokenizer, optimizer, scheduler and random number states.",
        "uri_folder",
    ),
    (
        "mlflow_model_folder",
        "Output folder holding the _best_ finetuned model in MLflow format (when _save_as_mlflow_model_ is true).",
        "mlflow_model",
    ),
)


@dataclass(frozen=True)
class DocParam:
    """One parameter of the spec: where it lives and its pydantic field."""

    path: tuple[str, ...]  # ("optimizer", "learning_rate"); ("tracking", "wandb_config", "project")
    field: FieldInfo
    order: int  # position in the spec

    @property
    def section(self) -> str:
        return self.path[0] if len(self.path) > 1 else ""

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def leaf(self) -> str:
        """The name inside its section (nested sections keep their prefix: wandb_config.project)."""
        return ".".join(self.path[1:]) if len(self.path) > 1 else self.path[0]

    @property
    def meta(self) -> dict[str, Any]:
        return meta_of(self.field)


def iter_params() -> Iterator[DocParam]:
    """Every parameter of the spec, root fields first, then section by section (targets last)."""
    counter = iter(range(1_000_000))

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[DocParam]:
        for name, field in model.model_fields.items():
            nested = _section_model(field)
            if nested is not None:
                yield from walk(nested, (*prefix, name))
            else:
                yield DocParam((*prefix, name), field, next(counter))

    yield from walk(spec_model(), ())


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


# --- the six cells -------------------------------------------------------------------------------


def _unwrap(ann: Any) -> Any:
    """Strip Annotated and Optional: `Flag | None` -> bool, `Precision` -> its Literal."""
    origin = get_origin(ann)
    if origin is Annotated:
        return _unwrap(get_args(ann)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return ann


def _literal_values(ann: Any) -> list[Any] | None:
    ann = _unwrap(ann)
    return list(get_args(ann)) if get_origin(ann) is Literal else None


def _is_flag(ann: Any) -> bool:
    """A flag, also one that takes a path instead of true (resume_from_checkpoint): true/false in the tables."""
    inner = _unwrap(ann)
    return inner is bool or bool in get_args(inner)


def _container(ann: Any) -> str | None:
    """"list" or "dict" for collection-valued parameters."""
    inner = _unwrap(ann)
    origin = get_origin(inner) or inner
    if origin in (list, tuple, set):
        return "list"
    if origin is dict:
        return "dict"
    return None


def aml_type(p: DocParam) -> str:
    """The Azure ML input type: flags, literals, text and collections are strings."""
    if "aml_type" in p.meta:
        return str(p.meta["aml_type"])
    ann = p.field.annotation
    if _is_flag(ann):
        return "string"
    values = _literal_values(ann)
    if values is not None:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "integer"
        return "string"
    inner = _unwrap(ann)
    if inner is int:
        return "integer"
    if inner is float:
        return "number"
    return "string"


def enum_values(p: DocParam, task: str | None = None) -> list[Any] | None:
    """The accepted values: the task's own (`task_enum`), else the Literal's, else true/false for flags."""
    task_enum = p.meta.get("task_enum", {})
    if task is not None and task in task_enum:
        return list(task_enum[task])
    if _is_flag(p.field.annotation):
        return list(FLAG_ENUM)
    return _literal_values(p.field.annotation)


def default_value(p: DocParam, task: str | None = None) -> Any:
    """The default for `task` (its `task_defaults` entry), else the field's; None when there is none."""
    task_defaults = p.meta.get("task_defaults", {})
    if task is not None and task in task_defaults:
        return task_defaults[task]
    if p.field.is_required():
        return None
    return p.field.get_default(call_default_factory=True)


def format_value(value: Any) -> str:
    """A value as the Azure ML docs print it: true/false, 2e-05, 0.0; empty for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def optional(p: DocParam, *, azure: bool) -> bool:
    """False for required parameters; in the Azure ML tables also for inputs marked aml_optional False."""
    if p.field.is_required():
        return False
    return not (azure and p.meta.get("aml_optional", True) is False)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if not text or text.endswith((".", "!", "?")) else text + "."


def _collection_note(p: DocParam) -> str:
    kind = _container(p.field.annotation)
    if kind == "list":
        return "A list: YAML, or JSON/YAML flow text such as [a, b]."
    if kind == "dict":
        return "A mapping: YAML, or JSON/YAML flow text such as {key: value}."
    return ""


def _aliases_note(p: DocParam) -> str:
    aliases = p.meta.get("aliases", ())
    return f"Also accepted as: {', '.join(aliases)}." if aliases else ""


def task_description(p: DocParam) -> str:
    parts = [_sentence(p.field.description or ""), _collection_note(p), _aliases_note(p)]
    return " ".join(x for x in parts if x)


def reference_description(p: DocParam) -> str:
    meta = p.meta
    parts = [_sentence(p.field.description or ""), _collection_note(p)]
    if meta.get("tasks"):
        parts.append(f"Tasks: {', '.join(meta['tasks'])}.")
    if meta.get("task_defaults"):
        listed = "; ".join(f"{t}: {format_value(v)}" for t, v in meta["task_defaults"].items())
        parts.append(f"Task defaults: {listed}.")
    if meta.get("task_enum"):
        listed = "; ".join(f"{t}: {', '.join(map(str, vs))}" for t, vs in meta["task_enum"].items())
        parts.append(f"Values per task: {listed}.")
    if meta.get("aml_optional") is False and not p.field.is_required():
        parts.append("A required input of the Azure ML component.")
    parts += [_aliases_note(p), _implied_note(p)]
    return " ".join(x for x in parts if x)


def _implied_note(p: DocParam) -> str:
    """How a spec turns the switch `p` on without naming it (IMPLIED_SWITCHES), as another tool's files do."""
    for section, switch, trigger in IMPLIED_SWITCHES:
        if p.path == (section, switch):
            given = f"gives {' or '.join(trigger)}" if trigger else "sets anything"
            return f"Turned on when the `{section}` section {given} and does not set {switch} itself."
    return ""


def _enum_cell(values: list[Any] | None) -> str:
    return str(values) if values else ""


# --- tables --------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A Markdown table padded into aligned columns, as in the Azure ML docs."""
    cells = [tuple(_cell(c) for c in row) for row in rows]
    widths = [max([len(header[i]), *(len(row[i]) for row in cells)]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in cells)]) + "\n"


def _task_row(p: DocParam, task: str) -> tuple[str, ...]:
    return (
        p.leaf,
        task_description(p),
        aml_type(p),
        format_value(default_value(p, task)),
        str(optional(p, azure=True)),
        _enum_cell(enum_values(p, task)),
    )


def reference_row(p: DocParam) -> tuple[str, ...]:
    return (
        p.key,
        reference_description(p),
        aml_type(p),
        format_value(default_value(p)),
        str(optional(p, azure=False)),
        _enum_cell(enum_values(p)),
    )


# --- per-task docs -------------------------------------------------------------------------------


def section_group(section: str) -> str:
    """The group of a section's parameters that have none: an Azure ML group of the same name, else its own."""
    title = _SECTION_TITLES.get(section, section.replace("_", " ").capitalize())
    name = f"{title} parameters"
    for group in DOC_GROUPS:
        if group.lower() == name.lower():
            return group
    return name


def group_of(p: DocParam) -> str:
    return str(p.meta.get("group") or section_group(p.section))


def task_params(task: str) -> list[DocParam]:
    """The parameters shown for `task`: those of its sections whose `tasks` include it."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    return [
        p
        for p in iter_params()
        if p.section and p.section not in _NOT_TASK_SECTIONS and task in p.meta.get("tasks", TASKS)
    ]


def task_groups(task: str) -> dict[str, list[DocParam]]:
    """Group name -> its parameters, groups and rows in documentation order."""
    params = task_params(task)
    extra_groups = list(dict.fromkeys(group_of(p) for p in params if group_of(p) not in DOC_GROUPS))
    order = [*DOC_GROUPS[:-1], *extra_groups, INPUTS_GROUP]
    rank = {name: i for i, name in enumerate(AML_INPUT_ORDER)}
    out: dict[str, list[DocParam]] = {}
    for group in order:
        rows = [p for p in params if group_of(p) == group]
        if rows:
            out[group] = sorted(rows, key=lambda p: (rank.get(p.leaf, len(rank)), p.order))
    return out


def _section_doc(section: str) -> str:
    """The docstring of a section (`targets.<name>` too), else its field description."""
    model = spec_model()
    owner: type[BaseModel] = model
    name = section
    if section.startswith("targets."):
        targets = _section_model(model.model_fields["targets"])
        assert targets is not None
        owner, name = targets, section.split(".", 1)[1]
    field = owner.model_fields[name]
    nested = _section_model(field)
    return _sentence((nested.__doc__ if nested is not None else None) or field.description or "")


def group_intro(group: str, rows: list[DocParam]) -> str:
    """The paragraph under a group name: the Azure ML group's own, or the docstring of the section."""
    if group in DOC_GROUPS:
        return GROUP_INTROS.get(group, "")
    return _section_doc(rows[0].section)


def render_task_docs(task: str) -> str:
    """The parameter tables of `task` in the layout of the Azure ML component docs (`ftc docs --task`)."""
    groups = task_groups(task)
    title = TASK_TITLES.get(task, task.replace("_", " ").title())
    out = [
        f"## {title} Finetune\n",
        f"Parameters of a `{task}` finetune, generated by `ftc docs --task {task}` from the spec schema. "
        "Names are the Azure ML component inputs; in a spec file each lives in its section, see "
        f"{REFERENCE_PATH}.\n",
        "## Inputs\n",
    ]
    for group, rows in groups.items():
        out.append(f"{group}\n")
        intro = group_intro(group, rows)
        if intro:
            out.append(f"{intro}\n")
        out.append(markdown_table(COLUMNS, [_task_row(p, task) for p in rows]))
    out.append("## Outputs\n")
    out.append(markdown_table(("Name", "Description", "Type"), list(OUTPUTS)))
    return "\n".join(out)


# --- the reference -------------------------------------------------------------------------------


def _section_notes(section: str) -> list[str]:
    notes = []
    aliases = [alias for alias, target in SECTION_ALIASES.items() if target == section]
    if aliases:
        notes.append(f"The section is also accepted as `{'`, `'.join(aliases)}`.")
    if section in SCALAR_SHORTHANDS:
        notes.append(f"A plain value (`{section}: ...`) stands for `{section}.{SCALAR_SHORTHANDS[section]}`.")
    return notes


def render_reference() -> str:
    """Every spec parameter, section by section, with its generic default (`docs/parameters.md`)."""
    params = list(iter_params())
    sections: dict[str, list[DocParam]] = {}
    for p in params:
        sections.setdefault(p.section if p.section != "targets" else ".".join(p.path[:2]), []).append(p)
    out = [
        f"<!-- Generated by `{REGENERATE}` from the spec schema: do not edit by hand. -->\n",
        "# Spec parameters\n",
        "Every key of a finetune spec, section by section. **Name** is the dotted key (`optimizer.learning_rate`); "
        "outside `targets`, a parameter can also be named by its last part alone (`--set learning_rate=1e-4`), "
        "and the names under *Also accepted as* (llama-recipes, Anyscale) are accepted too. **Type** is the Azure ML "
        "input type (flags and choices are strings). **Default** is the default of every task; task-specific defaults "
        "are in the description. **Optional** is False for keys a spec must give. Per-task tables in the Azure ML "
        "layout: `ftc docs --task <task>`, tasks: " + ", ".join(f"`{t}`" for t in TASKS) + ".\n",
    ]
    for name, rows in sections.items():
        if name == "":
            out.append("## Top level\n")
        else:
            out.append(f"## {name}\n")
            intro = " ".join([_section_doc(name), *_section_notes(name)]).strip()
            if intro:
                out.append(f"{intro}\n")
        out.append(markdown_table(COLUMNS, [reference_row(p) for p in rows]))
    return "\n".join(out)


__all__ = [
    "AML_INPUT_ORDER",
    "COLUMNS",
    "DocParam",
    "OUTPUTS",
    "REGENERATE",
    "TASK_TITLES",
    "aml_type",
    "default_value",
    "enum_values",
    "format_value",
    "group_intro",
    "iter_params",
    "markdown_table",
    "reference_row",
    "render_reference",
    "render_rules",
    "render_task_docs",
    "rules_table",
    "task_description",
    "task_groups",
]


def rules_table(rules: Iterable[Rule[Any]]) -> str:
    """Rules as a Markdown table: id, severity, title and what each checks."""
    return markdown_table(("Rule", "Severity", "Title", "What it checks"), [(r.id, r.severity, r.title, r.doc) for r in rules])


def render_rules() -> str:
    """The lint rules (`ftc docs --rules`): the spec's registry, then each target's (its `rules`), in id order."""
    from ftc.spec.rules import RULES
    from ftc.spec.targets import targets

    parts = [
        "# Lint rules\n\nGenerated by `ftc docs --rules` from the rule registry and the targets' rules. Silence a "
        "rule in a spec with `lint: {ignore: {FTC123: \"why\"}}`; `ftc lint --strict` fails on warnings too. FTC000 "
        "is an unreadable file, FTC001 a schema error, FTC002 a target that the spec's `targets.enabled` leaves out.\n",
        "## Spec rules\n\n`ftc lint` and every compile check these.\n\n" + rules_table(RULES.values()),
    ]
    for name, backend in targets().items():
        if backend.rules:
            parts.append(
                f"## Target `{name}`\n\n`ftc lint --target {name}` and every compile for {name} check these.\n\n"
                + rules_table(backend.rules.values())
            )
    return "\n".join(parts) + "\n"
