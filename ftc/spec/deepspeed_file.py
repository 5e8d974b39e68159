"""A user's DeepSpeed config file checked against the spec, the way the run will read it.

transformers fills the file's `"auto"` values from TrainingArguments and refuses explicit values
that disagree with them (HfTrainerDeepSpeedConfig); DeepSpeed then validates the filled config with
its own pydantic models and ignores top-level keys it does not know. `problems` predicts all three
without torch: the arithmetic here, DeepSpeed's models in a child process (DeepSpeed imports torch,
which the lint process never does), skipped when deepspeed is not installed.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftc.spec.model import SpecBase

MAX_BYTES = 1_000_000

# The top-level keys DeepSpeed 0.19's DeepSpeedConfig reads (tests/spec/test_deepspeed_file.py records
# them from the installed DeepSpeed); anything else is silently ignored by DeepSpeed.
TOP_LEVEL_KEYS = frozenset(
    ["activation_checkpointing", "aio", "amp", "autotuning", "bf16", "bfloat16", "checkpoint", "comet", "comms_logger", "communication_data_type", "compile", "compression_training", "csv_monitor", "curriculum_learning", "data_efficiency", "data_types", "dataloader_drop_last", "datastates_ckpt", "disable_allgather", "disable_python_gc", "dump_state", "eigenvalue", "elasticity", "expert_parallel", "flops_profiler", "fp16", "gradient_accumulation_steps", "gradient_allreduce_op", "gradient_clipping", "gradient_predivide_factor", "graph_harvesting", "hybrid_engine", "log_level", "managed_gradient_accumulation", "memory_breakdown", "nebula", "optimizer", "pipeline", "prescale_gradients", "progressive_layer_drop", "quantize_training", "scheduler", "seq_parallel_communication_data_type", "sequence_parallel_size", "sparse_attention", "sparse_gradients", "steps_per_print", "tensor_parallel", "tensorboard", "timers", "torch_autocast", "train_batch_size", "train_micro_batch_size_per_gpu", "use_data_before_expert_parallelism", "vocabulary_size", "wall_clock_breakdown", "wandb", "weight_quantization", "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "zero_optimization"]
)


@dataclass(frozen=True)
class Problem:
    """One problem of the file: its kind (a lint rule each), the key in the file, its line, the message."""

    kind: str  # "unreadable", "mismatch", "both_precisions", "unknown_key" or "refused"
    key: str
    line: int | None
    message: str

    def where(self, file: Path) -> str:
        return f"{file.name}:{self.line}" if self.line else file.name


def load(path: Path) -> dict[str, Any] | str:
    """The file's JSON object, or why it cannot be read."""
    try:
        if not path.is_file():
            return "is not a file"
        if path.stat().st_size > MAX_BYTES:
            return f"is larger than {MAX_BYTES} bytes"
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"is not valid JSON ({exc})"
    return config if isinstance(config, dict) else "is not a JSON object"


def _line(text: str, key: str) -> int | None:
    match = re.search(rf'"{re.escape(key)}"\s*:', text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def trainer_values(spec: SpecBase, world_size: int) -> dict[str, Any]:
    """What TrainingArguments will hold for the keys transformers fills or matches, by dotted key."""
    tr, opt = spec.training, spec.optimizer
    micro, accumulation = tr.per_device_train_batch_size, tr.gradient_accumulation_steps
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * world_size,
        "gradient_clipping": tr.max_grad_norm if tr.gradient_clipping else 0.0,
        "optimizer.params.lr": opt.learning_rate,
        "optimizer.params.betas": [opt.adam_beta1, opt.adam_beta2],
        "optimizer.params.eps": opt.adam_epsilon,
        "optimizer.params.weight_decay": opt.weight_decay,
        "scheduler.params.warmup_max_lr": opt.learning_rate,
    }


SPEC_KEYS = {
    "train_micro_batch_size_per_gpu": "training.per_device_train_batch_size",
    "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "train_batch_size": "per_device_train_batch_size x gradient_accumulation_steps x processes",
    "gradient_clipping": "training.max_grad_norm",
    "optimizer.params.lr": "optimizer.learning_rate",
    "optimizer.params.betas": "optimizer.adam_beta1 / adam_beta2",
    "optimizer.params.eps": "optimizer.adam_epsilon",
    "optimizer.params.weight_decay": "optimizer.weight_decay",
    "scheduler.params.warmup_max_lr": "optimizer.learning_rate",
}


def _get(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.get(part) if isinstance(node.get(part), dict) else None  # type: ignore[assignment]
        if node is None:
            return
    if node.get(last) == "auto":
        node[last] = value


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1.0)
    return a == b


def _enabled(config: dict[str, Any], section: str) -> bool | str | None:
    value = _get(config, f"{section}.enabled")
    return value if isinstance(value, (bool, str)) else None


def _precision_problems(config: dict[str, Any], text: str, precision: str) -> list[Problem]:
    fp16, bf16 = _enabled(config, "fp16"), _enabled(config, "bf16")
    problems = []
    if fp16 is True and bf16 is True:
        problems.append(Problem("both_precisions", "fp16.enabled", _line(text, "fp16"),
                                "enables both fp16 and bf16; keep one (or \"auto\" for both)"))
    # "auto" is decided on the GPU at run time (bf16, or fp16 on older GPUs), like "16"
    wanted = {"fp16": precision in ("fp16", "16", "auto"), "bf16": precision in ("bf16", "16", "auto")}
    for section, value in (("fp16", fp16), ("bf16", bf16)):
        if value is True and not wanted[section]:
            problems.append(Problem("mismatch", f"{section}.enabled", _line(text, section),
                                    f"{section}.enabled is true but precision.precision is {precision}; "
                                    f"set it to \"auto\" or precision to {section}"))
        if value is False and precision == section:
            problems.append(Problem("mismatch", f"{section}.enabled", _line(text, section),
                                    f"{section}.enabled is false but precision.precision is {precision}; set it to \"auto\""))
    return problems


def problems(path: Path, spec: SpecBase, world_size: int, engine: bool = True) -> list[Problem]:
    """Everything the run would refuse or silently ignore in the DeepSpeed file at `path`."""
    config = load(path)
    if isinstance(config, str):
        return [Problem("unreadable", "", None, f"not a readable DeepSpeed config: it {config}")]
    text = path.read_text(encoding="utf-8")
    found: list[Problem] = []
    for key in sorted(set(config) - TOP_LEVEL_KEYS):
        close = difflib.get_close_matches(key, sorted(TOP_LEVEL_KEYS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; DeepSpeed ignores it"
        found.append(Problem("unknown_key", key, _line(text, key), f"unknown top-level key {key!r}{hint}"))
    expected = trainer_values(spec, world_size)
    for dotted, value in expected.items():
        given = _get(config, dotted)
        if given is None or given == "auto":
            continue
        if dotted == "train_batch_size":
            micro = _get(config, "train_micro_batch_size_per_gpu")
            accumulation = _get(config, "gradient_accumulation_steps")
            micro = micro if isinstance(micro, int) else expected["train_micro_batch_size_per_gpu"]
            accumulation = accumulation if isinstance(accumulation, int) else expected["gradient_accumulation_steps"]
            value = micro * accumulation * world_size
        if not _equal(given, value):
            found.append(Problem("mismatch", dotted, _line(text, dotted.split(".")[-1]),
                                 f"{dotted} is {json.dumps(given)} but the run has {json.dumps(value)} "
                                 f"({SPEC_KEYS[dotted]}); set it to \"auto\""))
    found += _precision_problems(config, text, spec.precision.precision)
    if engine and not found:
        refusal = engine_refusal(filled(config, spec))
        if refusal:
            found.append(Problem("refused", "", None, f"DeepSpeed refuses it: {refusal}"))
    return found


def filled(config: dict[str, Any], spec: SpecBase) -> dict[str, Any]:
    """The config with its "auto" values filled as transformers would, for one process (DeepSpeed
    checks train_batch_size against the world size it sees, which is 1 outside a launcher)."""
    filled_config = json.loads(json.dumps(config))
    for dotted, value in trainer_values(spec, world_size=1).items():
        _set(filled_config, dotted, value)
    precision = spec.precision.precision
    _set(filled_config, "fp16.enabled", precision == "fp16")
    _set(filled_config, "bf16.enabled", precision in ("bf16", "16", "auto"))
    _set(filled_config, "scheduler.params.warmup_min_lr", 0.0)
    for dotted in ("scheduler.params.warmup_num_steps", "scheduler.params.total_num_steps"):  # known once data is
        _set(filled_config, dotted, max(1, spec.optimizer.warmup_steps))
    zero = filled_config.get("zero_optimization")
    if isinstance(zero, dict):  # sized from the model's hidden size by transformers: any number validates
        for key in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
            if zero.get(key) == "auto":
                zero[key] = 500_000_000
    return filled_config


_VALIDATE = """
import json, sys, logging
logging.disable(logging.WARNING)
from deepspeed.runtime.config import DeepSpeedConfig
try:
    DeepSpeedConfig(json.load(sys.stdin))
except Exception as exc:  # DeepSpeed raises pydantic ValidationError, ValueError, AssertionError, ...
    errors = getattr(exc, "errors", None)
    if callable(errors):
        lines = [".".join(map(str, e["loc"])) + ": " + e["msg"] for e in errors()]
        print(f"{getattr(exc, 'title', type(exc).__name__)}: " + "; ".join(lines))
    else:
        print(f"{type(exc).__name__}: {exc}")
"""


def engine_refusal(config: dict[str, Any]) -> str | None:
    """DeepSpeed's own verdict on a filled config (its DeepSpeedConfig, in a child process), or None
    when it accepts it or deepspeed is not installed."""
    if importlib.util.find_spec("deepspeed") is None:
        return None
    return _engine_verdict(json.dumps(config, sort_keys=True))


@functools.lru_cache(maxsize=64)
def _engine_verdict(config_json: str) -> str | None:
    """One child process per distinct filled config (a lint run over many specs shares the file)."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _VALIDATE], input=config_json, capture_output=True, text=True,
            timeout=120, check=False, env=_child_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run DeepSpeed's validation ({exc})"
    verdict = result.stdout.strip().splitlines()
    if result.returncode != 0:
        return f"DeepSpeed's validation failed to run ({(result.stderr.strip().splitlines() or ['?'])[-1]})"
    return verdict[-1] if verdict else None


def _child_env() -> dict[str, str]:
    """This environment without a launcher's variables (DeepSpeed would take them for a world)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.setdefault("DS_ACCELERATOR", "cpu")
    return env
