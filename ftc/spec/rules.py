"""Cross-field rules: the combinations the seeds' systems refuse or silently ignore.

Each rule has a stable id, a severity and a one-line doc; `ftc lint` runs them all, `ftc compile`
refuses a spec with an error-severity finding. A spec silences a rule with `lint.ignore`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ftc.spec.peek import MAX_ROWS, local_path, model_config, peek_data
from ftc.spec.secrets import looks_like_secret

if TYPE_CHECKING:
    from ftc.compiler.resolve import Resolved

Severity = Literal["error", "warning"]
KeyPath = tuple[str | int, ...]

SCHEMA_RULE = "FTC001"
UNREADABLE_RULE = "FTC000"


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
        RULES[rule_id] = Rule(rule_id, severity, title, (check.__doc__ or "").strip(), check)
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
    """Warmup that lasts as long as training never reaches the peak learning rate."""
    steps, warmup = r.spec.training.max_steps, r.spec.optimizer.warmup_steps
    if steps > 0 and warmup >= steps:
        yield (
            ("optimizer", "warmup_steps"),
            f"is {warmup} but training stops after max_steps={steps}; lower warmup_steps below max_steps",
        )


@rule("FTC106", "error", "literal secret in the spec")
def _literal_secret(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Tokens and keys must not be written in a spec: name the environment variable in env.secrets."""
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
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
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
    """Flash attention needs 16-bit precision (Azure ML raises); in 32-bit only PyTorch SDPA is used."""
    if r.spec.precision.use_fast_kernels and r.spec.precision.precision == "32":
        yield ("precision", "use_fast_kernels"), "flash attention needs precision 16 or bf16; with 32 only SDPA is used"


@rule("FTC120", "error", "path outside the spec's folder")
def _path_outside(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Relative paths must stay inside the spec's folder; allow one with lint.ignore and a reason."""
    for path, value in _path_values(r):
        if value and "://" not in value and not Path(value).is_absolute():
            inside = r.doc.base_dir / value
            if not _is_within(inside, r.doc.base_dir):
                yield path, f"{value!r} leads outside the spec's folder; move it, use an absolute path, or allow it in lint.ignore"


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
    if not (s.deepspeed.apply_deepspeed and s.deepspeed.deepspeed_stage == "3" and s.lora.apply_lora):
        return
    family = (model_config(r.doc.base_dir, s.model.model_selector_output) or {}).get("model_type")
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
    family = (model_config(r.doc.base_dir, s.model.model_selector_output) or {}).get("model_type")
    if family and family not in _LORA_FAMILIES:
        yield ("lora", "apply_lora"), f"model family {family!r} has no default target_modules; set lora.target_modules"


@rule("FTC126", "warning", "Mixtral without LoRA")
def _mixtral_full(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Mixture-of-experts models are finetuned with LoRA only (Anyscale)."""
    family = (model_config(r.doc.base_dir, r.spec.model.model_selector_output) or {}).get("model_type")
    if family == "mixtral" and not r.spec.lora.apply_lora:
        yield ("lora", "apply_lora"), "Mixtral is finetuned with LoRA only; set apply_lora: true"


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
    if tpeek and vpeek and len(tpeek.rows) < MAX_ROWS:
        unseen = vpeek.values(label) - tpeek.values(label)
        if unseen:
            shown = ", ".join(sorted(unseen)[:5])
            yield ("data", "label_key"), f"labels in {val.name} but not in {train.name}: {shown}"


@rule("FTC132", "error", "context longer than the model's positions")
def _context_fits(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """max_seq_length must not exceed the model's max_position_embeddings (checked when the model is local)."""
    length = r.spec.data.max_seq_length
    config = model_config(r.doc.base_dir, r.spec.model.model_selector_output) or {}
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    if length > 0 and isinstance(limit, int) and length > limit:
        yield ("data", "max_seq_length"), f"is {length} but the model has {limit} positions; use at most {limit}"


@rule("FTC133", "warning", "evaluating a large validation set very often")
def _eval_too_often(r: Resolved) -> Iterator[tuple[KeyPath, str]]:
    """Evaluating 10,000+ validation rows every few steps makes evaluation dominate training time."""
    ev = r.spec.evaluation
    if ev.evaluation_strategy != "steps" or ev.evaluation_steps_interval or ev.eval_steps > 5:
        return
    val = dict(_data_files(r)).get("validation")
    if val and _count_lines(val, 10_000) >= 10_000:
        yield ("evaluation", "eval_steps"), f"evaluates {val.name} (10,000+ rows) every {ev.eval_steps} steps; raise eval_steps"


_LORA_FAMILIES = {
    "gpt2", "bert", "roberta", "deberta", "deberta-v2", "distilbert", "t5", "mt5", "bart", "mbart", "camembert",
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "falcon", "phi3", "gemma", "gemma2",
}  # fmt: skip
_ZERO3_LORA_FAMILIES = {"llama", "falcon", "mistral", "mixtral", "phi3"}

_PATH_KEYS = (
    ("model", "model_selector_output"),
    ("model", "tokenizer_name"),
    ("data", "preprocess_output"),
    ("data", "train_file_path"),
    ("data", "validation_file_path"),
    ("data", "test_file_path"),
    ("deepspeed", "deepspeed"),
    ("checkpointing", "output_dir"),
)


def _path_values(r: Resolved) -> Iterator[tuple[KeyPath, str | None]]:
    for section, name in _PATH_KEYS:
        yield (section, name), getattr(getattr(r.spec, section), name)


def _is_within(path: Path, folder: Path) -> bool:
    import os.path

    return os.path.normpath(path).startswith(os.path.normpath(folder) + os.sep) or os.path.normpath(path) == os.path.normpath(folder)


def _data_files(r: Resolved) -> list[tuple[str, Path]]:
    d = r.spec.data
    found = []
    for role, value in (("train", d.train_file_path), ("validation", d.validation_file_path), ("test", d.test_file_path)):
        path = local_path(r.doc.base_dir, value)
        if path is None and d.preprocess_output:
            folder = local_path(r.doc.base_dir, d.preprocess_output)
            matches = sorted(folder.glob(f"{role}.*")) if folder and folder.is_dir() else []
            path = matches[0] if matches else None
        if path is not None and path.is_file():
            found.append((role, path))
    return found


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


def _count_lines(path: Path, cap: int) -> int:
    count = 0
    with path.open("rb") as fh:
        for count, _ in enumerate(fh, 1):
            if count >= cap:
                break
    return count
