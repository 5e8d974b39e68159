"""`ftc explain`: one aligned line per parameter with its source, and no secret in any of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ftc.cli.explain import explain_lines
from ftc.compiler.build import load_resolved

from tests.conftest import MINIMAL

TOKEN = "hf_" + "abcdefghijklmnopqrstuvwxyz0123456789AB"


def test_every_parameter_and_derived_value_has_a_line(write_spec: Callable[..., Path]) -> None:
    resolved = load_resolved(write_spec(MINIMAL + "optimizer:\n  learning_rate: 0.5\n"))
    head, *lines = explain_lines(resolved)
    assert head.startswith("# text_classification_finetune: task text_classification, spec ")
    keys = [line.split(" = ")[0] for line in lines]
    assert keys == [*resolved.sources, *(f"derived.{k}" for k in resolved.derived)]
    (lr,) = [line for line in lines if line.startswith("optimizer.learning_rate ")]
    (seed,) = [line for line in lines if line.startswith("training.seed ")]
    assert "= 0.5 " in lr and lr.endswith(":7:3") and seed.endswith("# default")
    assert lr.index(" # ") == seed.index(" # ")  # aligned


def test_a_token_in_the_name_is_masked_in_the_header_and_derived_name(write_spec: Callable[..., Path]) -> None:
    lines = explain_lines(load_resolved(write_spec(MINIMAL + f"name: {TOKEN}\n")))
    assert not [line for line in lines if TOKEN in line]
    assert lines[0].startswith("# ***: task text_classification")
    (name,) = [line for line in lines if line.startswith("derived.name ")]
    assert '"***"' in name


def test_a_token_in_a_source_or_value_is_masked(write_spec: Callable[..., Path]) -> None:
    spec = write_spec(MINIMAL + f"description: 'token {TOKEN}'\nenv:\n  vars:\n    X: 'https://u:{TOKEN}@host/x'\n")
    lines = explain_lines(load_resolved(spec, ["training.seed=7"]))
    assert not [line for line in lines if TOKEN in line]
    (env,) = [line for line in lines if line.startswith("env.vars ")]
    assert "https://***@host/x" in env


# The "LoRA on an 8B chat model, 2 nodes x 8 GPUs" spec.
LLM_SPEC = """\
task: causal_lm
model: /models/Llama-3.1-8B-Instruct
data: {train_file_path: train.jsonl, validation_file_path: valid.jsonl}
lora: {apply_lora: true}
checkpointing: {output_dir: /shared/runs/llama}
resources: {nodes: 2, processes_per_node: 8}
"""


def test_llm_defaults_and_where_each_came_from(write_spec: Callable[..., Path]) -> None:
    lines = {line.split(" = ")[0]: line for line in explain_lines(load_resolved(write_spec(LLM_SPEC)))[1:]}
    expected = {
        "precision.precision": ('"auto"', "# default (bf16 on GPUs that have it, else fp16; 32-bit on CPU; decided at run time)"),
        "data.max_seq_length": ("4096", "# default for task causal_lm (or the model's maximum when smaller)"),
        "optimizer.optim": ('"adamw_torch"', "# default for task causal_lm (adamw_torch_fused on CUDA GPUs)"),
        "training.per_device_eval_batch_size": ("4", "# default for task causal_lm (= training.per_device_train_batch_size)"),
        "derived.optim_fused_on_cuda": ("true", "# derived"),
    }
    for key, (value, source) in expected.items():
        assert f"{key} = {value} " in lines[key] and lines[key].endswith(source), lines[key]


def test_other_tasks_keep_the_seeds_defaults(write_spec: Callable[..., Path]) -> None:
    lines = {line.split(" = ")[0]: line for line in explain_lines(load_resolved(write_spec(MINIMAL)))[1:]}
    assert lines["data.max_seq_length"].startswith("data.max_seq_length = -1 ") and lines["data.max_seq_length"].endswith("# default")
    assert '= "adamw_hf" ' in lines["optimizer.optim"] and "= 1 " in lines["training.per_device_eval_batch_size"]
    assert "derived.optim_fused_on_cuda" not in lines
