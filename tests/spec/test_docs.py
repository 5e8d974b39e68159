"""The generated docs: the Azure ML tables of seeds 001/002 reproduced, and docs/parameters.md up to date."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ftc.compiler.build import task_docs
from ftc.spec.docs import COLUMNS, REFERENCE_PATH, REGENERATE, iter_params, render_reference, render_task_docs
from ftc.spec.fields import DOC_GROUPS, TASKS
from ftc.spec.sections import METRICS

FIXTURES = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]

# Verbatim copies of the seeds (the Azure ML component docs) that `ftc docs --task` reproduces.
SEEDS = {
    "text_classification": FIXTURES / "seed_001_text_classification.md",
    "question_answering": FIXTURES / "seed_002_question_answering.md",
}

# Where ftc deliberately accepts more values than the Azure ML components: our enum is the seed's
# followed by exactly these values. Each needs its reason; anything else must match the seed.
DELIBERATE_EXTENSIONS: dict[str, tuple[list[str], str]] = {
    "optim": (["adamw_torch_fused", "sgd"], "fused AdamW of torch, and plain SGD (llama-recipes)"),
    "precision": (
        ["bf16", "fp16", "auto"],
        "force one half precision; 16 picks bf16 where supported, else fp16; auto adds 32-bit on CPU",
    ),
    "lr_scheduler_type": (["step"], "llama-recipes StepLR: decay by gamma every epoch"),
    "evaluation_strategy": (["no"], "no evaluation during training (llama-recipes run_validation false)"),
}

# Where ftc's default deliberately differs from the Azure ML components' (seed value, ftc value, reason).
DELIBERATE_DEFAULTS: dict[str, tuple[str, str, str]] = {
    "precision": ("32", "auto", "GPU jobs train in bf16 (fp16 on older GPUs) unless told otherwise; CPU stays 32-bit"),
}

# The seeds name some groups differently from each other; DOC_GROUPS holds the names ftc prints.
SEED_GROUP_NAMES = {"ORT Parameters": "ONNX Runtime Parameters"}
EMPTY = {"", "NA", "-"}  # seed 002 writes NA and - for empty cells


@dataclass(frozen=True)
class Row:
    group: str
    name: str
    description: str
    type: str
    default: str
    optional: str
    enum: str


def _canonical_group(line: str) -> str:
    for seed_name, name in SEED_GROUP_NAMES.items():
        if line.startswith(seed_name):
            return name
    for name in DOC_GROUPS:  # seed 001 runs the intro into the group line: "ONNX Runtime Parameters ONNX ..."
        if line == name or line.startswith(name + " "):
            return name
    return line


def parse_inputs(text: str) -> list[Row]:
    """The parameter rows of the "## Inputs" tables, each with the group named above its table."""
    inputs = text.split("## Inputs", 1)[1].split("## Outputs", 1)[0]
    rows: list[Row] = []
    group, in_table, expect_group = "", False, True
    for raw in inputs.splitlines():
        line = raw.strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            in_table = True
            if cells[0] in ("Name", "") or set(cells[0]) == {"-"}:
                continue
            name, description, type_, default, optional, enum = cells
            clean = ["" if c in EMPTY else c for c in (default, optional, enum)]
            rows.append(Row(group, name, description, type_, *clean))
            continue
        if in_table:
            in_table, expect_group = False, True
        if line and expect_group:
            group, expect_group = _canonical_group(line), False
    return rows


def parse_outputs(text: str) -> dict[str, str]:
    outputs = text.split("## Outputs", 1)[1]
    found = {}
    for line in outputs.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0] not in ("Name",) and set(cells[0]) != {"-"}:
            found[cells[0]] = cells[2]
    return found


def by_name(rows: list[Row]) -> dict[str, Row]:
    out = {r.name: r for r in rows}
    assert len(out) == len(rows), "a parameter is listed twice"
    return out


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {task: render_task_docs(task) for task in TASKS}


@functools.cache
def render(task: str, fmt: str) -> str:
    """`ftc docs --task TASK --format FMT`: the tables, or the Azure ML component documented."""
    return render_task_docs(task) if fmt == "tables" else str(task_docs(task, fmt))


FORMATS = ("tables", "azureml")


def test_fixtures_are_the_seed_tables() -> None:
    # Guards the parser: every seed table is read, with its group.
    tc, qa = (parse_inputs(SEEDS[t].read_text()) for t in ("text_classification", "question_answering"))
    assert len(tc) == 42 and len(qa) == 42
    assert {r.group for r in tc} == set(DOC_GROUPS)
    assert {r.group for r in qa} == set(DOC_GROUPS) - {"MLFlow Parameters"}
    assert by_name(qa)["deepspeed"].default == "" and by_name(qa)["lora_alpha"].enum == ""


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("task", sorted(SEEDS))
def test_seed_rows_appear_with_the_same_type_default_optional_and_enum(task: str, fmt: str) -> None:
    ours = by_name(parse_inputs(render(task, fmt)))
    problems = []
    for seed in parse_inputs(SEEDS[task].read_text()):
        row = ours.get(seed.name)
        if row is None:
            problems.append(f"{seed.name}: missing")
            continue
        for column in ("group", "type", "default", "optional"):
            expected_value = getattr(seed, column)
            if column == "default" and seed.name in DELIBERATE_DEFAULTS:
                assert DELIBERATE_DEFAULTS[seed.name][0] == expected_value, seed.name  # the seed still says so
                expected_value = DELIBERATE_DEFAULTS[seed.name][1]
            if getattr(row, column) != expected_value:
                problems.append(f"{seed.name}: {column} {getattr(row, column)!r}, seed {getattr(seed, column)!r}")
        expected = seed.enum
        if seed.name in DELIBERATE_EXTENSIONS:
            extra = DELIBERATE_EXTENSIONS[seed.name][0]
            expected = str(ast.literal_eval(seed.enum) + extra)
        if row.enum != expected:
            problems.append(f"{seed.name}: enum {row.enum!r}, expected {expected!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("task", sorted(SEEDS))
def test_seed_rows_keep_their_order(task: str, fmt: str) -> None:
    ours = [r.name for r in parse_inputs(render(task, fmt))]
    seed = [r.name for r in parse_inputs(SEEDS[task].read_text())]
    assert [n for n in ours if n in seed] == seed


def test_deliberate_extensions_are_needed() -> None:
    # An entry whose seed enum ftc matches again (or no seed lists) must leave the list.
    seed_rows = {r.name: r for t in SEEDS for r in parse_inputs(SEEDS[t].read_text())}
    for name, (extra, reason) in DELIBERATE_EXTENSIONS.items():
        assert reason and extra
        assert name in seed_rows and seed_rows[name].enum, name
        assert not set(extra) & set(ast.literal_eval(seed_rows[name].enum)), name


@pytest.mark.parametrize("task", TASKS)
def test_group_order(task: str, rendered: dict[str, str]) -> None:
    groups = list(dict.fromkeys(r.group for r in parse_inputs(rendered[task])))
    assert groups[: len(DOC_GROUPS) - 1] == list(DOC_GROUPS[:-1])
    assert groups[-1] == "Data and Model inputs"
    extra = groups[len(DOC_GROUPS) - 1 : -1]
    assert extra and all(g.endswith(" parameters") and g not in DOC_GROUPS for g in extra)
    assert extra.index("Model parameters") < extra.index("Data parameters") < extra.index("FSDP parameters")
    assert extra.index("FSDP parameters") < extra.index("Tracking parameters") < extra.index("Resources parameters")


@pytest.mark.parametrize("task", TASKS)
def test_every_task_parameter_once_and_only_its_own(task: str, rendered: dict[str, str]) -> None:
    rows = by_name(parse_inputs(rendered[task]))
    names = {r.name for r in rows.values()}
    for p in iter_params():
        if not p.section or p.section in ("lint", "targets"):
            assert p.leaf not in names
        elif task in p.meta.get("tasks", TASKS):
            assert p.leaf in names
        else:
            assert p.leaf not in names, f"{p.key} is not a {task} parameter"


def test_task_only_parameters(rendered: dict[str, str]) -> None:
    tc, qa = (by_name(parse_inputs(rendered[t])) for t in ("text_classification", "question_answering"))
    assert "doc_stride" in qa and "doc_stride" not in tc
    assert "sentence1_key" in tc and "sentence1_key" not in qa
    assert qa["doc_stride"].group == "Data parameters" and qa["doc_stride"].default == "128"


def test_task_defaults_and_enums(rendered: dict[str, str]) -> None:
    lm = by_name(parse_inputs(rendered["causal_lm"]))
    assert lm["learning_rate"].default == "0.0001"
    assert lm["batching_strategy"].default == "packing"
    assert lm["lora_alpha"].default == "32" and lm["lora_dropout"].default == "0.05"
    tc = by_name(parse_inputs(rendered["text_classification"]))
    assert tc["eval_accumulation_steps"].default == ""  # 1 is question_answering's own default
    for task in TASKS:
        row = by_name(parse_inputs(rendered[task]))["metric_for_best_model"]
        assert row.enum == str(METRICS[task])


def test_descriptions_name_the_aliases(rendered: dict[str, str]) -> None:
    rows = by_name(parse_inputs(rendered["text_classification"]))
    assert rows["learning_rate"].description.endswith("Also accepted as: lr.")
    assert "use_peft" in rows["apply_lora"].description
    assert "Also accepted as" not in rows["seed"].description
    assert "A list" in rows["target_modules"].description and rows["target_modules"].type == "string"


@pytest.mark.parametrize("task", TASKS)
def test_outputs(task: str, rendered: dict[str, str]) -> None:
    assert parse_outputs(rendered[task]) == {"pytorch_model_folder": "uri_folder", "mlflow_model_folder": "mlflow_model"}


@pytest.mark.parametrize("text", [render_task_docs("question_answering"), render_reference()], ids=["task", "reference"])
def test_tables_are_aligned(text: str) -> None:
    tables: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("|"):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    tables = [t for t in tables if t]
    assert tables
    for table in tables:
        assert len({len(line) for line in table}) == 1, table[0]
        bars = {tuple(i for i, c in enumerate(line) if c == "|" and line[i - 1 : i] != "\\") for line in table}
        assert len(bars) == 1, table[0]
    assert all(t[0].split("|")[1].strip() == "Name" for t in tables)
    assert [c.strip() for c in tables[0][0].strip("|").split("|")] == list(COLUMNS)
    assert text.endswith("\n")


def test_reference_lists_every_key() -> None:
    text = render_reference()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    for p in iter_params():
        assert p.key in rows, p.key
    assert "targets.local.python" in rows
    lr = rows["optimizer.learning_rate"]
    assert "causal_lm: 0.0001" in lr and "Also accepted as: lr" in lr and "| 2e-05 " in lr
    assert "question_answering: loss, f1, exact" in rows["evaluation.metric_for_best_model"]
    assert "| False " in rows["task"] and "| False " in rows["model.model_selector_output"]
    assert text.index("## model\n") < text.index("## data\n") < text.index("## lora\n") < text.index("## targets.local\n")


def test_reference_is_up_to_date() -> None:
    committed = (ROOT / REFERENCE_PATH).read_text(encoding="utf-8")
    assert committed == render_reference(), f"{REFERENCE_PATH} is out of date: run `{REGENERATE}`"
    assert committed.splitlines()[0] == f"<!-- Generated by `{REGENERATE}` from the spec schema: do not edit by hand. -->"


def test_unknown_task() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        render_task_docs("image_classification")


def test_docs_need_no_training_or_cli_packages() -> None:
    code = (
        "import sys; import ftc.backends.registry; from ftc.spec import docs; docs.render_reference(); "
        "docs.render_task_docs('causal_lm'); "
        "print(sorted(m for m in ('torch', 'transformers', 'jinja2', 'typer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
