"""Spec -> transformers 5 TrainingArguments: names, aliases, derived values and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftc.runtime.config import Override, load_config
from ftc.runtime.errors import RuntimeUserError
from ftc.runtime.training_args import (
    auto_precision,
    build_training_arguments,
    optimizer_name,
    precision_flags,
    training_arguments_kwargs,
)

from tests.runtime.conftest import TINY_SPEC


@pytest.fixture
def config(compile_config) -> Path:
    return compile_config()


def kwargs_for(config: Path, n_train: int = 240, cuda: bool = False, **overrides: object) -> dict:
    cfg = load_config(config, [Override(k, str(v)) for k, v in overrides.items()])
    return training_arguments_kwargs(cfg, n_train=n_train, has_eval=True, cuda=cuda)


def test_defaults_of_the_tiny_spec(config: Path, project: Path) -> None:
    cfg = load_config(config)
    args = build_training_arguments(cfg, n_train=240, has_eval=True, cuda=False)
    assert args.output_dir == str(project / "out" / "pytorch_model_folder")
    assert args.eval_strategy == "epoch" and args.save_strategy == "epoch"
    assert args.load_best_model_at_end is True
    assert args.metric_for_best_model == "eval_accuracy" and args.greater_is_better is True
    assert args.optim == "adamw_torch"
    assert args.max_steps == -1 and args.num_train_epochs == 8
    assert args.save_total_limit == 1
    assert args.use_cpu is True and args.bf16 is False and args.fp16 is False
    assert args.report_to == [] or args.report_to == "none" or args.report_to == ["none"]
    assert args.disable_tqdm is False
    assert args.max_grad_norm == 1.0
    assert args.lr_scheduler_type == "linear"  # the other schedulers: test_parameter_reaches_the_trainer


def test_renamed_and_removed_values(config: Path) -> None:
    kw = kwargs_for(config, optim="adamw_hf", gradient_clipping="false", save_total_limit=-1, max_steps=0,
                    metric_for_best_model="loss", eval_accumulation_steps=-1)
    assert kw["optim"] == "adamw_torch"  # transformers 5 has no adamw_hf
    assert kw["max_grad_norm"] == 0.0
    assert kw["save_total_limit"] is None
    assert kw["max_steps"] == -1
    assert kw["metric_for_best_model"] == "eval_loss" and kw["greater_is_better"] is False
    assert kw["eval_accumulation_steps"] is None
    assert "evaluation_strategy" not in kw and "tokenizer" not in kw


def test_eval_steps_from_interval(config: Path) -> None:
    # 240 rows / 16 = 15 steps per epoch; a third of an epoch is 5 steps.
    kw = kwargs_for(config, evaluation_strategy="steps", evaluation_steps_interval=0.34)
    assert (kw["eval_strategy"], kw["eval_steps"], kw["save_strategy"], kw["save_steps"]) == ("steps", 5, "steps", 5)
    kw = kwargs_for(config, evaluation_strategy="steps", eval_steps=7)
    assert kw["eval_steps"] == 7


def test_no_evaluation(config: Path) -> None:
    kw = kwargs_for(config, run_validation="false")
    assert kw["eval_strategy"] == "no" and kw["save_strategy"] == "no" and kw["load_best_model_at_end"] is False
    with pytest.raises(RuntimeUserError, match="apply_early_stopping needs evaluation"):
        kwargs_for(config, evaluation_strategy="no", apply_early_stopping="true")


def test_min_update_steps_and_checkpoint_every_n_epochs(config: Path) -> None:
    cfg = load_config(config, [Override("min_update_steps", "40")])  # the spec gives num_train_epochs, so...
    kw = training_arguments_kwargs(cfg, n_train=240, has_eval=True, cuda=False)
    assert kw["num_train_epochs"] == 3  # ceil(40 / 15): min_update_steps named on the command line wins
    kw = kwargs_for(config, checkpoint_every_n_epochs=2)
    assert (kw["eval_strategy"], kw["eval_steps"]) == ("steps", 30)


def test_precision() -> None:
    assert precision_flags("32", cuda=False) == {}
    assert precision_flags("16", cuda=False) == {"bf16": True}
    assert precision_flags("bf16", cuda=False) == {"bf16": True}
    with pytest.raises(RuntimeUserError, match="precision fp16 needs a CUDA GPU"):
        precision_flags("fp16", cuda=False)


@pytest.mark.parametrize(("bf16_gpu", "flags", "why"), [(True, {"bf16": True}, "GPU supports bf16"), (False, {"fp16": True}, "GPU has no bf16")])
def test_precision_auto(monkeypatch: pytest.MonkeyPatch, bf16_gpu: bool, flags: dict, why: str) -> None:
    import torch

    assert precision_flags("auto", cuda=False) == {} and auto_precision(cuda=False) == ("32", "training on CPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **kw: bf16_gpu)
    assert precision_flags("auto", cuda=True) == flags
    assert auto_precision(cuda=True)[1] == why


def test_precision_is_auto_unless_given(compile_config) -> None:
    assert load_config(compile_config()).spec.precision.precision == "auto"
    assert load_config(compile_config(), [Override("precision", "32")]).spec.precision.precision == "32"
    # llama-recipes: mixed_precision false is 32-bit, true bf16, use_fp16 fp16 (in the spec or on the command line)
    assert load_config(compile_config(), [Override("mixed_precision", "false")]).spec.precision.precision == "32"
    spec = TINY_SPEC + "precision:\n  mixed_precision: false\n"
    assert load_config(compile_config(spec, name="mp.yaml", build="mp")).spec.precision.precision == "32"
    spec = TINY_SPEC + "precision:\n  use_fp16: true\n"
    assert load_config(compile_config(spec, name="fp16.yaml", build="fp16")).spec.precision.precision == "fp16"


def test_other_tasks_keep_the_seeds_optimizer_and_eval_batch(config: Path) -> None:
    cfg = load_config(config)
    assert optimizer_name(cfg, cuda=True) == "adamw_torch"  # the spec chose it
    assert "optim_fused_on_cuda" not in cfg.derived and "eval_batch_from_train" not in cfg.derived


def test_step_scheduler_placeholder_and_arguments_accepted(config: Path) -> None:
    cfg = load_config(config, [Override("lr_scheduler_type", "step"), Override("precision", "16")])
    args = build_training_arguments(cfg, n_train=240, has_eval=True, cuda=False)
    assert args.lr_scheduler_type == "constant"  # FtcTrainer builds the step schedule itself
    assert args.bf16 is True


# Every spec parameter the Trainer consumes, set away from its default, reaches the validated
# TrainingArguments: (spec parameter, value, TrainingArguments attribute, expected value).
WIRED = [
    ("per_device_train_batch_size", 7, "per_device_train_batch_size", 7),
    ("per_device_eval_batch_size", 5, "per_device_eval_batch_size", 5),
    ("gradient_accumulation_steps", 3, "gradient_accumulation_steps", 3),
    ("auto_find_batch_size", "true", "auto_find_batch_size", True),
    ("seed", 1234, "seed", 1234),
    ("enable_full_determinism", "true", "full_determinism", True),
    ("dataloader_num_workers", 2, "dataloader_num_workers", 2),
    ("max_grad_norm", 0.25, "max_grad_norm", 0.25),
    ("optim", "adafactor", "optim", "adafactor"),
    ("optim", "sgd", "optim", "sgd"),
    ("learning_rate", 0.003, "learning_rate", 0.003),
    ("weight_decay", 0.05, "weight_decay", 0.05),
    ("adam_beta1", 0.8, "adam_beta1", 0.8),
    ("adam_beta2", 0.95, "adam_beta2", 0.95),
    ("adam_epsilon", 1e-6, "adam_epsilon", 1e-6),
    ("warmup_steps", 9, "warmup_steps", 9),
    ("num_warmup_steps", 4, "warmup_steps", 4),  # llama-recipes / Anyscale name
    ("num_train_epochs", 3, "num_train_epochs", 3),
    ("num_epochs", 2, "num_train_epochs", 2),
    ("max_steps", 11, "max_steps", 11),
    ("save_total_limit", 3, "save_total_limit", 3),
    ("metric_for_best_model", "f1_macro", "metric_for_best_model", "eval_f1_macro"),
    ("logging_strategy", "steps", "logging_strategy", "steps"),
    ("logging_steps", 3, "logging_steps", 3),
    ("eval_accumulation_steps", 2, "eval_accumulation_steps", 2),
    ("gradient_checkpointing", "true", "activation_checkpointing", True),
    ("precision", "bf16", "bf16", True),
] + [("lr_scheduler_type", t, "lr_scheduler_type", t) for t in
     ("cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")]


@pytest.mark.parametrize("name, value, attribute, expected", WIRED, ids=[f"{w[0]}={w[1]}" for w in WIRED])
def test_parameter_reaches_the_trainer(config: Path, name: str, value: object, attribute: str, expected: object) -> None:
    default = getattr(build_training_arguments(load_config(config), n_train=240, has_eval=True, cuda=False), attribute)
    cfg = load_config(config, [Override(name, str(value))])
    got = getattr(build_training_arguments(cfg, n_train=240, has_eval=True, cuda=False), attribute)
    if hasattr(got, "value"):  # transformers' enums (optim, scheduler, strategies)
        got, default = got.value, getattr(default, "value", default)
    assert got == expected
    assert default != expected, f"{name}={value} is the tiny spec's own value: the test would prove nothing"
