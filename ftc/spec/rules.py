"""Cross-field rules: the combinations the seeds' systems refuse or silently ignore.

Each rule has a stable id, a severity and a one-line doc; `ftc lint` runs them all, `ftc compile`
refuses a spec with an error-severity finding. A spec silences a rule with `lint.ignore`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ftc.spec import deepspeed_file, env_values
from ftc.spec.peek import (
    count_lines,
    find_file,
    is_file,
    local_path,
    model_config,
    model_family,
    peek_data,
    read_json,
)
from ftc.spec.secrets import looks_like_secret
from ftc.spec.sections import LLM_MAX_SEQ_LENGTH, LLM_TASKS

if TYPE_CHECKING:
    from ftc.compiler.resolve import Resolved

Severity = Literal["error", "warning"]
KeyPath = tuple[str | int, ...]

HUGE_CONTEXT = 32768  # FTC135: causal_lm max_seq_length above this is warned about

SCHEMA_RULE = "FTC001"
UNREADABLE_RULE = "FTC000"
SECRET_RULE = "FTC106"
TARGET_RULE = "FTC002"  # a target the spec's targets.enabled leaves out
# Rules lint.ignore cannot silence: a literal secret would reach the artifacts.
UNSILENCEABLE = frozenset({SECRET_RULE})


@dataclass(frozen=True)
class Finding:
    """One lint result: which rule, how bad, which key, and what to do."""

    rule: str
    severity: Severity
    path: KeyPath
    message: str

    @classmethod
    def error(cls, rule: str, path: KeyPath, message: str) -> Finding:
        return cls(rule, "error", path, message)

    @classmethod
    def warning(cls, rule: str, path: KeyPath, message: str) -> Finding:
        return cls(rule, "warning", path, message)

    @property
    def key(self) -> str:
        return ".".join(str(p) for p in self.path)


Check = Callable[["Resolved"], Iterator[tuple[KeyPath, str]]]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title: str
    doc: str
    check: Check


RULES: dict[str, Rule] = {}


def rule(rule_id: str, severity: Severity, title: str) -> Callable[[Check], Check]:
    """Register a check; its docstring is the rule's documentation."""

    def register(check: Check) -> Check:
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id} registered twice")
        RULES[rule_id] = Rule(rule_id, severity, title, " ".join((check.__doc__ or "").split()), check)
        return check

    return register


def run_rules(resolved: Resolved) -> list[Finding]:
    """Every finding of every rule not ignored by the spec, in rule order."""
    ignored = resolved.spec.lint.ignore
    findings = []
    for rule_id, r in RULES.items():
        if rule_id in ignored:
            continue
        findings.extend(Finding(rule_id, r.severity, path, message) for path, message in r.check(resolved))
    return findings


def _given(resolved: Resolved, key: str) -> bool:
    source = resolved.sources.get(key, "default")
    return not (source.startswith("default") or source.startswith("derived"))


@rule("FTC101", "warning", "evaluation every N steps without N")
def _eval_steps_unset(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """evaluation_strategy: steps needs eval_steps or evaluation_steps_interval (Azure ML QA spec)."""
    if r.spec.evaluation.evaluation_strategy == "steps" and not (
        _given(r, "evaluation.eval_steps") or _given(r, "evaluation.evaluation_steps_interval")
    ):
        yield (
            ("evaluation", "evaluation_strategy"),
            "is steps but neither eval_steps nor evaluation_steps_interval is set; evaluating every 500 steps "
            "(set one of them)",
        )


@rule("FTC102", "warning", "LoRA settings without LoRA")
def _lora_settings_without_lora(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """LoRA settings such as merge_lora_weights or lora_r have no effect unless apply_lora is true."""
    if r.spec.lora.apply_lora:
        return
    for name in type(r.spec.lora).model_fields:
        if name != "apply_lora" and _given(r, f"lora.{name}"):
            yield ("lora", name), "has no effect because lora.apply_lora is false; set apply_lora: true or remove it"


@rule("FTC103", "warning", "DeepSpeed file without apply_deepspeed")
def _deepspeed_file_ignored(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """A deepspeed config file is ignored unless apply_deepspeed is true (Azure ML finetune.py)."""
    ds = r.spec.deepspeed
    if ds.deepspeed and not ds.apply_deepspeed:
        yield ("deepspeed", "deepspeed"), "is ignored because apply_deepspeed is false; set apply_deepspeed: true"


@rule("FTC104", "error", "flop counter with profiler")
def _flop_counter_with_profiler(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """flop_counter and use_profiler cannot be used together (llama-recipes train_utils)."""
    t = r.spec.tracking
    if t.flop_counter and t.use_profiler:
        yield ("tracking", "use_profiler"), "cannot be used with flop_counter; turn one of them off"


@rule("FTC105", "warning", "warmup longer than training")
def _warmup_longer_than_training(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Warmup that lasts as long as training never reaches the peak learning rate. Without max_steps, the
    steps are counted from the training rows, batch size, processes and epochs (when the data is reachable)."""
    steps, warmup = r.spec.training.max_steps, r.spec.optimizer.warmup_steps
    if steps > 0 and warmup >= steps:
        yield (
            ("optimizer", "warmup_steps"),
            f"is {warmup} but training stops after max_steps={steps}; lower warmup_steps below max_steps",
        )
    elif steps <= 0 < warmup and (estimate := _most_train_steps(r)) and warmup >= estimate[0]:
        total, rows, name = estimate
        yield (
            ("optimizer", "warmup_steps"),
            f"is {warmup} but {rows} rows of {name} make at most {total} training steps; lower warmup_steps",
        )


@rule("FTC106", "error", "literal secret in the spec")
def _literal_secret(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Tokens, keys and passwords must not be written in a spec (as values or as keys): name the environment
    variable in env.secrets. lint.ignore cannot silence this rule."""
    for path, value in _strings(r.doc.data, ()):
        if looks_like_secret(value):
            yield path, "looks like a literal token or key; put it in an environment variable listed in env.secrets"


@rule("FTC107", "error", "ONNX Runtime training is unavailable")
def _ort_unavailable(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """apply_ort cannot run: ORTTrainer and ORTModule do not import with transformers 5 and torch 2.13."""
    if r.spec.ort.apply_ort:
        yield (
            ("ort", "apply_ort"),
            "ONNX Runtime training cannot run with transformers 5 / torch 2.13 (ORTTrainer no longer imports); "
            "set apply_ort: false and use precision: 16 or use_fast_kernels for speed",
        )


@rule("FTC108", "warning", "early-stopping settings without early stopping")
def _early_stopping_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """early_stopping_patience and early_stopping_threshold apply only if apply_early_stopping is true."""
    if r.spec.early_stopping.apply_early_stopping:
        return
    for name in ("early_stopping_patience", "early_stopping_threshold"):
        if _given(r, f"early_stopping.{name}"):
            yield ("early_stopping", name), "has no effect because apply_early_stopping is false"


@rule("FTC109", "warning", "step interval with an epoch strategy")
def _steps_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """logging_steps applies only to logging_strategy steps, eval_steps only to evaluation_strategy steps."""
    if r.spec.tracking.logging_strategy != "steps" and _given(r, "tracking.logging_steps"):
        yield ("tracking", "logging_steps"), "has no effect because logging_strategy is not steps"
    if r.spec.evaluation.evaluation_strategy != "steps":
        for name in ("eval_steps", "evaluation_steps_interval"):
            if _given(r, f"evaluation.{name}"):
                yield ("evaluation", name), "has no effect because evaluation_strategy is not steps"


@rule("FTC110", "error", "DeepSpeed with auto_find_batch_size")
def _deepspeed_auto_batch(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """DeepSpeed fixes the batch size in its config, so auto_find_batch_size cannot change it (Azure ML)."""
    if r.spec.deepspeed.apply_deepspeed and r.spec.training.auto_find_batch_size:
        yield ("training", "auto_find_batch_size"), "cannot be used with apply_deepspeed; set it to false"


@rule("FTC111", "error", "early stopping without evaluation")
def _early_stopping_needs_eval(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Early stopping compares evaluations, so it needs evaluation_strategy epoch or steps."""
    if r.spec.early_stopping.apply_early_stopping and r.spec.evaluation.evaluation_strategy == "no":
        yield ("early_stopping", "apply_early_stopping"), "needs evaluation; set evaluation_strategy to epoch or steps"


@rule("FTC112", "error", "DeepSpeed with FSDP")
def _deepspeed_with_fsdp(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """DeepSpeed and FSDP both shard the model; choose one."""
    if r.spec.deepspeed.apply_deepspeed and r.spec.fsdp.enable_fsdp:
        yield ("fsdp", "enable_fsdp"), "cannot be used with deepspeed.apply_deepspeed; choose one"


def _strings(value: Any, path: KeyPath) -> Iterator[tuple[KeyPath, str]]:
    """Every string of a parsed document, mapping keys included, with its key path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str):
                yield (*path, k), k
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


@rule("FTC113", "error", "profiler window longer than training")
def _profiler_window(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The profiler waits 1, warms up 2 and records 3 steps, so it needs max_steps 0 (off) or at least 7."""
    steps = r.spec.training.max_steps
    if r.spec.tracking.use_profiler and 0 < steps < 7:
        yield ("tracking", "use_profiler"), f"needs at least 7 training steps but max_steps is {steps}"


@rule("FTC114", "error", "flop counter starts after training ends")
def _flop_counter_window(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The flop counter needs max_steps 0 (off) or more steps than flop_counter_start."""
    t, steps = r.spec.tracking, r.spec.training.max_steps
    if t.flop_counter and 0 < steps <= t.flop_counter_start:
        yield ("tracking", "flop_counter_start"), f"is {t.flop_counter_start} but training stops after {steps} steps"


@rule("FTC115", "error", "unsupported PEFT combination")
def _peft_method(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """llama_adapter cannot be used with FSDP; prefix tuning is not supported (llama-recipes raises)."""
    lora = r.spec.lora
    if not lora.apply_lora:
        return
    if lora.peft_method == "prefix":
        yield ("lora", "peft_method"), "prefix is not supported (llama-recipes raises); use lora"
    if lora.peft_method == "llama_adapter" and r.spec.fsdp.enable_fsdp:
        yield ("lora", "peft_method"), "llama_adapter cannot be used with FSDP; use lora or turn enable_fsdp off"


@rule("FTC116", "error", "quantization limits")
def _quantization(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """QLoRA (4bit/8bit) needs a GPU (bitsandbytes), cannot use DeepSpeed, and 8bit cannot use FSDP."""
    q = r.spec.precision.quantization
    if q is None:
        return
    if r.spec.resources.device == "cpu":
        yield ("precision", "quantization"), "needs a GPU (bitsandbytes); set resources.device to gpu or remove it"
    if r.spec.deepspeed.apply_deepspeed:
        yield ("precision", "quantization"), "cannot be used with DeepSpeed (Azure ML disables it); choose one"
    if q == "8bit" and r.spec.fsdp.enable_fsdp:
        yield ("precision", "quantization"), "8bit cannot be used with FSDP (llama-recipes); use 4bit or no FSDP"


@rule("FTC117", "error", "setting without the option it belongs to")
def _prerequisites(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Options that need another: from_peft_checkpoint needs apply_lora, hsdp needs HYBRID_SHARD, anyprecision needs pure_bf16."""
    s = r.spec
    if s.lora.from_peft_checkpoint and not s.lora.apply_lora:
        yield ("lora", "from_peft_checkpoint"), "needs apply_lora: true"
    if s.fsdp.hsdp and s.fsdp.sharding_strategy != "HYBRID_SHARD":
        yield ("fsdp", "hsdp"), "needs sharding_strategy: HYBRID_SHARD"
    if s.fsdp.fsdp_optimizer == "anyprecision" and not s.precision.pure_bf16:
        yield ("fsdp", "fsdp_optimizer"), "anyprecision needs precision.pure_bf16: true"


@rule("FTC118", "warning", "FSDP settings without FSDP")
def _fsdp_settings_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """FSDP settings (sharding, checkpoint_type, low_cpu_fsdp, ...) have no effect unless enable_fsdp is true."""
    if r.spec.fsdp.enable_fsdp:
        return
    for name in type(r.spec.fsdp).model_fields:
        if name != "enable_fsdp" and _given(r, f"fsdp.{name}"):
            yield ("fsdp", name), "has no effect because fsdp.enable_fsdp is false"


@rule("FTC119", "warning", "fast attention kernels in 32-bit")
def _fast_kernels_fp32(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Flash attention needs 16-bit precision (Azure ML raises); in 32-bit (precision 32, or auto on CPU) only
    PyTorch SDPA is used."""
    p = r.spec.precision
    if p.use_fast_kernels and (p.precision == "32" or (p.precision == "auto" and r.spec.resources.device == "cpu")):
        yield ("precision", "use_fast_kernels"), "flash attention needs precision 16 or bf16; with 32 only SDPA is used"


@rule("FTC120", "error", "path outside the spec's folder")
def _path_outside(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Relative paths must stay inside the spec's folder (model.gguf_file inside the model folder), through `..`
    or through relative symlinks; a symlink to an absolute path counts as that absolute path, which is allowed.
    Allow one with lint.ignore and a reason."""
    spec_folder = r.doc.base_dir
    model_folder = spec_folder / r.spec.model.model_selector_output
    for key, value in _path_values(r):
        gguf = key == ("model", "gguf_file")
        if _is_relative_path(value) and _climbs_out(model_folder if gguf else spec_folder, value):
            where = "the model folder" if gguf else "the spec's folder"
            yield key, f"{value!r} leads outside {where}; move it, use an absolute path, or allow it in lint.ignore"


@rule("FTC121", "warning", "min_update_steps with num_train_epochs")
def _min_update_steps_ignored(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """min_update_steps is used only when num_train_epochs is not given (Anyscale)."""
    if r.spec.training.min_update_steps is not None and _given(r, "training.num_train_epochs"):
        yield ("training", "min_update_steps"), "is ignored because num_train_epochs is given; remove one"


@rule("FTC122", "error", "fp16 on CPU")
def _fp16_on_cpu(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """fp16 mixed precision needs a GPU; on CPU use bf16 (precision 16 picks bf16 there)."""
    if r.spec.precision.precision == "fp16" and r.spec.resources.device == "cpu":
        yield ("precision", "precision"), "fp16 needs a GPU; use bf16 or 16 on CPU"


@rule("FTC123", "warning", "best model without evaluation")
def _best_model_without_eval(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """metric_for_best_model chooses among evaluated checkpoints, so it needs evaluation."""
    if r.spec.evaluation.evaluation_strategy == "no" and _given(r, "evaluation.metric_for_best_model"):
        yield ("evaluation", "metric_for_best_model"), "has no effect without evaluation; the last model is kept"


@rule("FTC124", "error", "ZeRO-3 with LoRA")
def _zero3_lora(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """ZeRO-3 with LoRA works only for causal LMs of the llama, mistral, mixtral, falcon and phi3 families (Azure ML)."""
    s = r.spec
    if not (_zero_stage(r) == "3" and s.lora.apply_lora):
        return
    family = _family(r)
    if s.task != "causal_lm" or (family and family not in _ZERO3_LORA_FAMILIES):
        yield (
            ("deepspeed", "deepspeed_stage"),
            f"ZeRO-3 with LoRA is not supported for {s.task}" + (f" on {family}" if family else "") + "; use stage 2",
        )


@rule("FTC125", "warning", "LoRA on a family without default target modules")
def _lora_family(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Without target_modules, LoRA needs a model family with known defaults (the Azure ML families and llama-likes)."""
    s = r.spec
    if not s.lora.apply_lora or s.lora.target_modules:
        return
    family = _family(r)
    if family and family not in _LORA_FAMILIES:
        yield ("lora", "apply_lora"), f"model family {family!r} has no default target_modules; set lora.target_modules"


@rule("FTC126", "warning", "Mixtral without LoRA")
def _mixtral_full(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Mixture-of-experts models are finetuned with LoRA only (Anyscale)."""
    if _family(r) == "mixtral" and not r.spec.lora.apply_lora:
        yield ("lora", "apply_lora"), "Mixtral is finetuned with LoRA only; set apply_lora: true"


@rule("FTC127", "warning", "default DeepSpeed settings with a DeepSpeed file")
def _deepspeed_defaults_ignored(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """deepspeed_stage, offload_optimizer and offload_param shape only the default ZeRO config, so they are ignored
    when a deepspeed file is given (Azure ML)."""
    if not r.spec.deepspeed.deepspeed:
        return
    for name in ("deepspeed_stage", "offload_optimizer", "offload_param"):
        if _given(r, f"deepspeed.{name}"):
            yield ("deepspeed", name), "is ignored because deepspeed names a config file; set it in that file or remove it"


@rule("FTC128", "error", "ZeRO-3 on a Phi (mixformer) model")
def _zero3_phi(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """DeepSpeed ZeRO-3 fails on Phi (mixformer) models (Azure ML); phi3 works (checked when the model is local)."""
    family = _family(r)
    if family in _ZERO3_FAILS and _zero_stage(r) == "3":
        yield ("deepspeed", "apply_deepspeed"), f"ZeRO-3 fails on {family} (Phi) models; use ZeRO stage 2 or FSDP"


@rule("FTC129", "error", "quantization on an unsupported model family")
def _quantization_family(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """QLoRA (4bit/8bit) works only for the llama, falcon, mixtral and gpt_oss families (Azure ML; checked when
    the model is local)."""
    family = _family(r)
    if r.spec.precision.quantization and family and family not in _QUANTIZATION_FAMILIES:
        yield (
            ("precision", "quantization"),
            f"is not supported for model family {family!r} (only {', '.join(sorted(_QUANTIZATION_FAMILIES))}); remove it",
        )


@rule("FTC130", "error", "column missing from the data")
def _columns_exist(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The columns the spec names exist in the data files (checked when the files are reachable)."""
    needed = _task_columns(r)
    for file_key, path in _data_files(r):
        peek = peek_data(path)
        if peek is None or not peek.rows:
            continue
        for key, column in needed:
            if column not in peek.columns and not (key == "text_key" and "messages_key" in dict(needed)):
                yield (
                    ("data", key),
                    f"column {column!r} is not in {path.name} (columns: {', '.join(sorted(peek.columns))})",
                )
        if r.spec.task == "causal_lm" and not {r.spec.data.text_key, r.spec.data.messages_key} & peek.columns:
            yield ("data", "text_key"), f"{path.name} has neither {r.spec.data.text_key!r} nor {r.spec.data.messages_key!r}"


@rule("FTC131", "error", "validation label unseen in training")
def _labels_seen(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Every label in the validation data appears in the training data (text classification)."""
    if r.spec.task != "text_classification":
        return
    files = dict(_data_files(r))
    train, val = files.get("train"), files.get("validation")
    if not (train and val):
        return
    tpeek, vpeek = peek_data(train), peek_data(val)
    label = r.spec.data.label_key
    if tpeek and vpeek and tpeek.complete:
        unseen = vpeek.values(label) - tpeek.values(label)
        if unseen:
            shown = ", ".join(sorted(unseen)[:5])
            yield ("data", "label_key"), f"labels in {val.name} but not in {train.name}: {shown}"


@rule("FTC132", "error", "context longer than the model's positions")
def _context_fits(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """max_seq_length must not exceed the model's max_position_embeddings (checked when the model is local;
    causal_lm's default yields to a smaller maximum)."""
    if not _given(r, "data.max_seq_length"):
        return
    length = r.spec.data.max_seq_length
    config = model_config(r.doc.base_dir, r.spec.model.model_selector_output) or {}
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    if length > 0 and type(limit) is int and length > limit:
        yield ("data", "max_seq_length"), f"is {length} but the model has {limit} positions; use at most {limit}"


@rule("FTC133", "warning", "evaluating a large validation set very often")
def _eval_too_often(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Evaluating 10,000+ validation rows every few steps makes evaluation dominate training time."""
    ev = r.spec.evaluation
    if ev.evaluation_strategy != "steps" or ev.evaluation_steps_interval or ev.eval_steps > 5:
        return
    val = dict(_data_files(r)).get("validation")
    if val and (count_lines(val, 10_000) or 0) >= 10_000:
        yield ("evaluation", "eval_steps"), f"evaluates {val.name} (10,000+ rows) every {ev.eval_steps} steps; raise eval_steps"


@rule("FTC134", "error", "validation data with no rows")
def _eval_has_rows(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Evaluation needs at least one batch: the validation file has rows, or the training data has at least two
    to hold one out (checked when the files are reachable)."""
    files = dict(_data_files(r))
    val, train = files.get("validation"), files.get("train")
    if val is not None:
        peek = peek_data(val)
        if peek is not None and not peek.rows:
            yield _data_key(r, "validation"), f"{val.name} has no rows, so evaluation gets no batch; add rows or remove it"
    elif train is not None:
        peek = peek_data(train)
        if peek is not None and len(peek.rows) < 2:
            yield (
                _data_key(r, "train"),
                f"{train.name} has {len(peek.rows)} row(s): too few to hold out validation data; "
                "give data.validation_file_path",
            )


@rule("FTC135", "warning", "causal_lm context of more than 32768 tokens")
def _huge_context(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """A causal_lm max_seq_length over 32768 tokens (given, or -1 with a local model whose maximum is that large)
    makes every packed row that long: attention memory grows with it, and one row rarely fits a GPU. ftc's
    default is 4096 (or the model's maximum when smaller)."""
    if r.spec.task not in LLM_TASKS:
        return
    length = r.spec.data.max_seq_length
    if length == -1:
        config = model_config(r.doc.base_dir, r.spec.model.model_selector_output) or {}
        limit = config.get("max_position_embeddings") or config.get("n_positions")
        length = limit if type(limit) is int else 0
    if length > HUGE_CONTEXT:
        yield ("data", "max_seq_length"), (
            f"makes packed rows of {length} tokens; that rarely fits a GPU: set it to the longest sample you need "
            f"(ftc's default is {LLM_MAX_SEQ_LENGTH})"
        )


@rule("FTC140", "error", "quantization without LoRA")
def _quantization_without_lora(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """QLoRA trains an adapter on the quantized model: quantization turns apply_lora on unless the spec sets it
    false, which the runtime refuses."""
    lora = r.spec.lora
    if r.spec.precision.quantization and not (lora.apply_lora or lora.from_peft_checkpoint):
        yield ("lora", "apply_lora"), "is false but precision.quantization trains an adapter only; set apply_lora: true"


@rule("FTC141", "warning", "layer freezing that has no effect")
def _freeze_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """num_freeze_layers applies only with freeze_layers; freeze_layers has no effect with PEFT, which already
    freezes the whole base model (llama-recipes freezes layers only without PEFT)."""
    tr, lora = r.spec.training, r.spec.lora
    if not tr.freeze_layers:
        if _given(r, "training.num_freeze_layers"):
            yield ("training", "num_freeze_layers"), "has no effect because freeze_layers is false"
    elif lora.apply_lora or lora.from_peft_checkpoint:
        yield ("training", "freeze_layers"), "has no effect with LoRA, which freezes the whole base model; remove it"


@rule("FTC142", "warning", "hsdp group sizes without hsdp")
def _group_sizes_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """sharding_group_size and replica_group_size apply only to hybrid sharding (fsdp.hsdp: true)."""
    f = r.spec.fsdp
    if not f.enable_fsdp or f.hsdp:
        return  # without FSDP, FTC118 reports them
    for name in ("sharding_group_size", "replica_group_size"):
        if _given(r, f"fsdp.{name}"):
            yield ("fsdp", name), "has no effect because fsdp.hsdp is false; set hsdp: true or remove it"


@rule("FTC143", "warning", "gradient clipping that does nothing")
def _clipping_unused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Clipping needs gradient_clipping true and max_grad_norm above 0 (llama-recipes)."""
    tr = r.spec.training
    if not tr.gradient_clipping and _given(r, "training.max_grad_norm"):
        yield ("training", "max_grad_norm"), "has no effect because gradient_clipping is false"
    if tr.gradient_clipping and tr.max_grad_norm == 0 and _given(r, "training.gradient_clipping"):
        yield ("training", "gradient_clipping"), "is true but max_grad_norm is 0, so nothing is clipped; raise max_grad_norm"


@rule("FTC144", "warning", "checkpoint settings without evaluation")
def _checkpoints_without_eval(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Checkpoints are saved at evaluations, so without evaluation (run_validation false or evaluation_strategy no,
    and no checkpoint_every_n_epochs / max_num_checkpoints) save_total_limit has no effect; the final model is
    still saved."""
    ck = r.spec.checkpointing
    if r.spec.evaluation.evaluation_strategy != "no" or ck.checkpoint_every_n_epochs or ck.max_num_checkpoints:
        return
    if _given(r, "checkpointing.save_total_limit"):
        yield (
            ("checkpointing", "save_total_limit"),
            "has no effect: checkpoints are saved at evaluations and evaluation is off; turn evaluation on or remove it",
        )


@rule("FTC145", "error", "FSDP combination the runtime cannot run")
def _fsdp_limits(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """With FSDP the adapter is sharded, so LoRA must save it unmerged (merge_lora_weights: false); on CPU
    (resources.device cpu) only FSDP2 runs (FULL_SHARD, SHARD_GRAD_OP) with sharded checkpoints: NO_SHARD and
    HYBRID_SHARD are FSDP1, which accelerate runs on GPUs only, and FULL_STATE_DICT checkpoints fail in CPU processes."""
    s = r.spec
    if not s.fsdp.enable_fsdp:
        return
    if (s.lora.apply_lora or s.lora.from_peft_checkpoint) and s.lora.merge_lora_weights and s.checkpointing.save_model:
        yield ("lora", "merge_lora_weights"), "cannot be true with fsdp.enable_fsdp (the adapter is sharded); set it to false"
    if s.resources.device == "cpu":
        if s.fsdp.sharding_strategy in ("NO_SHARD", "HYBRID_SHARD"):
            yield ("fsdp", "sharding_strategy"), (
                f"{s.fsdp.sharding_strategy} is FSDP1, which runs on GPUs only; on CPU use FULL_SHARD or SHARD_GRAD_OP"
            )
        if s.fsdp.checkpoint_type == "FULL_STATE_DICT":
            yield ("fsdp", "checkpoint_type"), "FULL_STATE_DICT fails in CPU processes; use SHARDED_STATE_DICT on CPU"


def hsdp_problem(sharding: int, replica: int, nodes: int, per_node: int) -> str | None:
    """Why these hybrid-sharding group sizes cannot run (None when they can); lint rule FTC146 and the runtime.

    HYBRID_SHARD shards within each node and replicates across nodes (torch's own groups); a
    custom device mesh of other sizes is not built, so other sizes are refused, not dropped."""
    world = nodes * per_node
    sharding, replica = sharding or per_node, replica or nodes
    if sharding * replica != world:
        return (
            f"sharding_group_size {sharding} x replica_group_size {replica} = {sharding * replica}, "
            f"but the job has {world} processes ({nodes} node(s) x {per_node})"
        )
    if (sharding, replica) != (per_node, nodes):
        return (
            f"sharding_group_size {sharding} x replica_group_size {replica} is not supported: hybrid sharding "
            f"shards within each node and replicates across nodes; use {per_node} x {nodes} (or 0 for both)"
        )
    return None


@rule("FTC146", "error", "hybrid-sharding groups the runtime cannot build")
def _hsdp_groups(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """With fsdp.hsdp, sharding_group_size x replica_group_size must equal the world size (nodes x
    processes_per_node), and the groups must be the nodes: HYBRID_SHARD shards within each node and replicates
    across nodes. Other group sizes are refused (here and by the runtime), never silently dropped."""
    f, res = r.spec.fsdp, r.spec.resources
    if f.enable_fsdp and f.hsdp:
        problem = hsdp_problem(f.sharding_group_size, f.replica_group_size, res.nodes, res.processes_per_node)
        if problem:
            yield ("fsdp", "sharding_group_size"), problem


@rule("FTC147", "error", "a `$` in env.vars that is not a reference")
def _env_value_dollars(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """In env.vars, `$NAME` and `${NAME}` expand at run time, on the node, on every target (empty when unset).
    Any other `$` is refused: no target-independent escape exists (Ray expands `$NAME` in its env_vars)."""
    for name, value in r.spec.env.vars.items():
        problem = env_values.problem(value)
        if problem:
            yield ("env", "vars", name), problem


def _deepspeed_file_problems(r: Resolved, engine: bool = False) -> tuple[Path, list[deepspeed_file.Problem]] | None:
    """The user's DeepSpeed file and its problems, when apply_deepspeed names one that is reachable."""
    ds = r.spec.deepspeed
    path = local_path(r.doc.base_dir, ds.deepspeed) if ds.apply_deepspeed else None
    if path is None:
        return None
    return path, deepspeed_file.problems(path, r.spec, int(r.derived["world_size"]), engine=engine)


def _deepspeed_findings(r: Resolved, kinds: tuple[str, ...], engine: bool = False) -> Iterator[tuple[KeyPath, str]]:
    found = _deepspeed_file_problems(r, engine)
    if found is None:
        return
    path, problems = found
    for p in problems:
        if p.kind in kinds:
            yield ("deepspeed", "deepspeed"), f"{p.where(path)}: {p.message}"


@rule("FTC150", "error", "DeepSpeed file that cannot be read")
def _deepspeed_file_unreadable(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The DeepSpeed config file must be a JSON object (checked when the file is reachable)."""
    yield from _deepspeed_findings(r, ("unreadable",))


@rule("FTC151", "error", "DeepSpeed value that disagrees with the Trainer's")
def _deepspeed_file_mismatch(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Values the Trainer also owns (micro batch, accumulation, train_batch_size = micro x accumulation x processes,
    gradient clipping, optimizer lr / betas / eps / weight decay, fp16 and bf16) must be "auto" or equal the
    spec's: transformers refuses a mismatch when training starts, and fp16 with bf16 both on is refused too."""
    yield from _deepspeed_findings(r, ("mismatch", "both_precisions"))


@rule("FTC152", "warning", "unknown top-level DeepSpeed key")
def _deepspeed_file_unknown_key(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """DeepSpeed silently ignores top-level keys it does not know (a typo such as zero_optimisation turns
    ZeRO off); the message suggests the nearest known key."""
    yield from _deepspeed_findings(r, ("unknown_key",))


@rule("FTC153", "error", "DeepSpeed file that DeepSpeed refuses")
def _deepspeed_file_refused(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """The file, with its "auto" values filled from the spec as transformers fills them, passes DeepSpeed's own
    config models (checked in a child process when deepspeed is installed, and only when FTC150-152 find nothing)."""
    yield from _deepspeed_findings(r, ("refused",), engine=True)


_LORA_FAMILIES = {
    "gpt2", "bert", "roberta", "deberta", "deberta-v2", "distilbert", "t5", "mt5", "bart", "mbart", "camembert",
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "falcon", "phi3", "gemma", "gemma2",
}  # fmt: skip
_ZERO3_LORA_FAMILIES = {"llama", "falcon", "mistral", "mixtral", "phi3"}
_ZERO3_FAILS = {"phi", "mixformer-sequential"}  # Phi-1/1.5/2: "mixformer-sequential" before transformers named it phi
_QUANTIZATION_FAMILIES = {"llama", "falcon", "mixtral", "gpt_oss"}

# Paths relative to the spec's folder (model.gguf_file: to the model folder); targets.* exist when the target does.
# targets.ray.working_dir is not one: it may be a folder above the spec's, which the job then uploads whole.
_PATH_KEYS: tuple[KeyPath, ...] = (
    ("model", "model_selector_output"),
    ("model", "tokenizer_name"),
    ("model", "gguf_file"),
    ("data", "preprocess_output"),
    ("data", "train_file_path"),
    ("data", "validation_file_path"),
    ("data", "test_file_path"),
    ("lora", "from_peft_checkpoint"),
    ("deepspeed", "deepspeed"),
    ("checkpointing", "output_dir"),
    ("fsdp", "dist_checkpoint_root_folder"),
    ("tracking", "profiler_dir"),
    ("targets", "ray", "storage_path"),
    ("targets", "slurm", "venv"),
    ("targets", "slurm", "output"),
    ("targets", "slurm", "error"),
)
_MAX_SYMLINKS = 40


def _family(r: Resolved) -> str | None:
    return model_family(r.doc.base_dir, r.spec.model.model_selector_output)


def _zero_stage(r: Resolved) -> str | None:
    """The ZeRO stage DeepSpeed runs: the config file's when one is given (None if unreadable), else deepspeed_stage."""
    ds = r.spec.deepspeed
    if not ds.apply_deepspeed:
        return None
    if not ds.deepspeed:
        return ds.deepspeed_stage
    path = local_path(r.doc.base_dir, ds.deepspeed)
    config = read_json(path) if path is not None else None
    zero = config.get("zero_optimization") if isinstance(config, dict) else None
    stage = zero.get("stage") if isinstance(zero, dict) else None
    return None if stage is None else str(stage)


def _path_values(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    for key in _PATH_KEYS:
        value: Any = r.spec
        for name in key:
            value = getattr(value, str(name), None)
        if isinstance(value, str):
            yield key, value


def _is_relative_path(value: str) -> bool:
    return bool(value) and "://" not in value and not value.startswith("~") and not os.path.isabs(value)


def _climbs_out(folder: Path, value: str) -> bool:
    """Whether relative `value` leads out of `folder` through `..`, or through symlinks with relative targets.

    A symlink to an absolute path stands for that path, as an absolute path in the spec would.
    """
    pending, inside, hops = list(Path(value).parts), [], 0
    while pending:
        part = pending.pop(0)
        if part == os.pardir:
            if not inside:
                return True
            inside.pop()
        elif part != os.curdir:
            inside.append(part)
            target = _link_target(folder.joinpath(*inside))
            if target is None:
                continue
            if os.path.isabs(target):
                return False
            hops += 1
            if hops > _MAX_SYMLINKS:
                return True  # a symlink loop never arrives inside
            inside.pop()
            pending = [*Path(target).parts, *pending]
    return False


def _link_target(path: Path) -> str | None:
    """The target of symlink `path`; None when it is no symlink or cannot be read."""
    try:
        return os.readlink(path) if path.is_symlink() else None
    except (OSError, ValueError):
        return None


def _data_files(r: Resolved) -> list[tuple[str, Path]]:
    d = r.spec.data
    found = []
    for role, value in (("train", d.train_file_path), ("validation", d.validation_file_path), ("test", d.test_file_path)):
        path = local_path(r.doc.base_dir, value)
        if path is None and d.preprocess_output:
            folder = local_path(r.doc.base_dir, d.preprocess_output)
            path = find_file(folder, role) if folder is not None else None
        if path is not None and is_file(path):
            found.append((role, path))
    return found


def _data_key(r: Resolved, role: str) -> KeyPath:
    """The key that named the data file of `role`: its *_file_path, or preprocess_output."""
    name = f"{role}_file_path"
    return ("data", name) if getattr(r.spec.data, name) else ("data", "preprocess_output")


def _most_train_steps(r: Resolved) -> tuple[int, int, str] | None:
    """(at most how many optimizer steps training makes, training rows, file name) when the whole training file
    was read; None otherwise, and for question answering, whose long contexts make several rows each."""
    train = dict(_data_files(r)).get("train")
    if train is None or r.spec.task == "question_answering":
        return None
    peek = peek_data(train)
    if peek is None or not peek.rows or not peek.complete:
        return None
    tr = r.spec.training
    batches = math.ceil(len(peek.rows) / (tr.per_device_train_batch_size * r.derived["world_size"]))
    per_epoch = max(1, math.ceil(batches / tr.gradient_accumulation_steps))
    epochs = tr.num_train_epochs
    if r.derived.get("epochs_from_min_update_steps") and tr.min_update_steps:
        epochs = max(1, math.ceil(tr.min_update_steps / per_epoch))
    return per_epoch * epochs, len(peek.rows), train.name


def _task_columns(r: Resolved) -> list[tuple[str, str]]:
    d = r.spec.data
    keys = {
        "text_classification": ["sentence1_key", "sentence2_key", "label_key"],
        "question_answering": ["question_key", "context_key", "answers_key"],
        "translation": ["source_key", "target_key"],
        "summarization": ["source_key", "target_key"],
        "causal_lm": [],
    }[r.spec.task]
    return [(k, getattr(d, k)) for k in keys if getattr(d, k)]
