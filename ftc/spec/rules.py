"""Cross-field rules: the combinations the seeds' systems refuse or silently ignore.

Each rule has a stable id, a severity and a one-line doc; `ftc lint` runs them all, `ftc compile`
refuses a spec with an error-severity finding. A spec silences a rule with `lint.ignore`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

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
