"""The runtime's configuration: `ftc.resolved.json`, command-line overrides, and path resolution.

`python -m ftc.runtime --config PATH [--output_dir DIR] [--<parameter> VALUE ...]`

A parameter is named by its leaf name or an alias (`--learning_rate 1e-4`, `--lr 1e-4`) or by
its dotted path (`--training.seed 3`); VALUE is read as YAML, like a value in the spec. Relative
paths in the config resolve against the spec's folder (the config's folder joined with its
`base_dir`); relative paths given on the command line resolve against the current directory.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from ftc.errors import UnreadableSpec
from ftc.runtime.errors import UsageError
from ftc.spec.keys import accepted_names, leaf_index
from ftc.spec.loader import load_value
from ftc.spec.model import SECTION_ALIASES, SpecBase, spec_model
from ftc.spec.secrets import looks_like_secret, mask_secrets
from ftc.spec.sections import LOWER_IS_BETTER

# Keys of the config file that are not spec sections.
META_KEYS = ("ftc", "base_dir", "derived")
# Arguments launchers add on their own (deepspeed passes --local_rank=N); accepted and ignored.
IGNORED_ARGS = ("local_rank", "local-rank")

USAGE = """\
usage: python -m ftc.runtime --config PATH/ftc.resolved.json [--output_dir DIR] [--<parameter> VALUE ...]

Runs the finetune described by a compiled spec (ftc.resolved.json).

  --config PATH        the resolved config written by `ftc compile`
  --output_dir DIR     where outputs go (relative to the current directory)
  --<parameter> VALUE  override any spec parameter by its name or alias (--learning_rate 1e-4,
                       --lr 1e-4) or dotted path (--training.seed 3); VALUE is read as YAML.
                       A flag given without a value means true (--apply_lora).
"""


@dataclass(frozen=True)
class Override:
    """One `--name value` from the command line."""

    name: str  # as typed, without the dashes
    text: str  # the value as typed

    def __str__(self) -> str:
        return f"--{self.name} {self.text}"


@dataclass(frozen=True)
class Args:
    config: str | None
    overrides: list[Override] = field(default_factory=list)
    help: bool = False


def parse_args(argv: list[str]) -> Args:
    """Split argv into --config and `--name value` overrides (also `--name=value`)."""
    config: str | None = None
    overrides: list[Override] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            return Args(config, overrides, help=True)
        if not arg.startswith("--") or len(arg) == 2:
            raise UsageError(f"unexpected argument {arg!r}; parameters are given as --name value")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            value = argv[i + 1] if has_value else "true"
            i += 2 if has_value else 1
        else:
            i += 1
        if name in IGNORED_ARGS:
            continue
        if name == "config":
            config = value
        else:
            overrides.append(Override(name, value))
    return Args(config, overrides)


@dataclass
class RunConfig:
    """A validated spec, its derived values, and where its relative paths point."""

    spec: SpecBase
    derived: dict[str, Any]
    config_path: Path
    root: Path  # the spec's folder: relative paths in the config resolve against it
    cli_keys: set[tuple[str, ...]] = field(default_factory=set)  # parameters set on the command line
    cwd: Path = field(default_factory=Path.cwd)

    @property
    def task(self) -> str:
        return str(self.spec.task)

    def _base(self, key: tuple[str, ...]) -> Path:
        return self.cwd if key in self.cli_keys else self.root

    def path(self, section: str, name: str) -> Path | None:
        """A file or folder parameter as an absolute path (None when unset)."""
        value = getattr(getattr(self.spec, section), name)
        if value is None or value == "":
            return None
        p = Path(os.path.expanduser(str(value)))
        return p if p.is_absolute() else Path(os.path.normpath(self._base((section, name)) / p))

    def model_ref(self, section: str, name: str) -> str | None:
        """A model or tokenizer: a local folder (absolute) when it exists, else the value as a hub id."""
        value = getattr(getattr(self.spec, section), name)
        if value is None or value == "":
            return None
        local = self.path(section, name)
        return str(local) if local is not None and local.exists() else str(value)

    @property
    def output_dir(self) -> Path:
        out = self.path("checkpointing", "output_dir")
        assert out is not None
        return out


def load_config(config_path: str | Path, overrides: list[Override] | None = None, cwd: Path | None = None) -> RunConfig:
    """Read `ftc.resolved.json`, apply overrides, validate into the typed spec."""
    path = Path(config_path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(raw, dict) or "task" not in raw:
        raise UsageError(f"{path} is not an ftc runtime config (ftc.resolved.json written by `ftc compile`)")
    params = {k: v for k, v in raw.items() if k not in META_KEYS}
    cli_keys: set[tuple[str, ...]] = set()
    given: dict[tuple[str, ...], Override] = {}
    for ov in overrides or []:
        _refuse_literal_secret(ov)
        key = override_path(ov.name)
        _set(params, key, _parse_value(ov.text, key))
        cli_keys.add(key)
        given[key] = ov
    try:
        spec = spec_model().model_validate(params)
    except ValidationError as exc:
        raise UsageError(_validation_message(exc, given, path)) from None
    derived = _derive(spec, dict(raw.get("derived") or {}), cli_keys)
    base_dir = str(raw.get("base_dir") or ".")
    root = Path(os.path.normpath(path.resolve().parent / base_dir))
    return RunConfig(spec=spec, derived=derived, config_path=path, root=root, cli_keys=cli_keys, cwd=cwd or Path.cwd())


def _refuse_literal_secret(ov: Override) -> None:
    """A token, key or password typed on the command line is refused, as lint rule FTC106 refuses it in a spec."""
    if looks_like_secret(ov.name) or looks_like_secret(ov.text):
        raise UsageError(
            f"{mask_secrets(str(ov))}: looks like a literal token, key or password; put it in an environment "
            "variable (listed in env.secrets) instead of the command line"
        )


def ensure_output_dir(folder: Path) -> None:
    """Create the output folder if need be and check that files can be written in it; UsageError if not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except FileExistsError:
        raise UsageError(f"output_dir: {folder} is a file, not a folder") from None
    except NotADirectoryError:
        file = next((p for p in reversed(folder.parents) if p.exists() and not p.is_dir()), folder)
        raise UsageError(f"output_dir: cannot create {folder}: {file} is a file, not a folder") from None
    except OSError as exc:
        raise UsageError(f"output_dir: cannot write in {folder}: {exc.strerror or exc}") from None


def override_path(name: str) -> tuple[str, ...]:
    """The (section, parameter) a command-line name stands for; UsageError with a hint if unknown."""
    if "." not in name:
        index = leaf_index()
        if name in index:
            return index[name]
        close = difflib.get_close_matches(name, list(index), n=1, cutoff=0.6)
        hint = f"; did you mean --{close[0]}?" if close else "; parameters are named as in the spec (e.g. --learning_rate)"
        raise UsageError(f"unknown parameter --{name}{hint}")
    parts = name.split(".")
    parts[0] = SECTION_ALIASES.get(parts[0], parts[0])
    model: type[BaseModel] | None = spec_model()
    out: list[str] = []
    for i, part in enumerate(parts):
        if model is None:  # inside a mapping such as env.vars: keys are free
            out.append(part)
            continue
        names = accepted_names(model)
        if part not in names or (i == 0 and part in ("targets", "lint", "version", "task")):
            close = difflib.get_close_matches(part, list(names), n=1, cutoff=0.6)
            where = ".".join(out) or "the spec"
            hint = f"; did you mean --{'.'.join([*out, close[0]])}?" if close else ""
            raise UsageError(f"unknown parameter --{name}: {where} has no {part!r}{hint}")
        primary = names[part]
        out.append(primary)
        ann = model.model_fields[primary].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif "dict" in str(ann) and i < len(parts) - 1:
            model = None
        elif i < len(parts) - 1:
            raise UsageError(f"unknown parameter --{name}: {'.'.join(out)} is a value, not a section")
    return tuple(out)


def _parse_value(text: str, key: tuple[str, ...]) -> Any:
    try:
        value = load_value(text, f"--{'.'.join(key)}") if text.strip() else ""
    except UnreadableSpec as exc:
        raise UsageError(str(exc)) from None
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        value = text.strip()  # YAML 1.1 reads no/yes/on/off as booleans: `--evaluation_strategy no`
    if isinstance(value, str) and _is_list_field(key):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return value


def _is_list_field(key: tuple[str, ...]) -> bool:
    model: Any = spec_model()
    for part in key:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return get_origin(model) is list or any(get_origin(a) is list for a in get_args(model))


def _set(params: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    node = params
    for part in key[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[key[-1]] = value


def _validation_message(exc: ValidationError, given: dict[tuple[str, ...], Override], path: Path) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        source = next((str(ov) for key, ov in given.items() if loc[: len(key)] == key), None)
        where = source or f"{path}: {'.'.join(loc)}"
        lines.append(f"{where}: {err['msg']}")
    return "invalid configuration: " + "; ".join(lines)


def _derive(spec: SpecBase, derived: dict[str, Any], cli_keys: set[tuple[str, ...]]) -> dict[str, Any]:
    """Recompute what the compiler derived, for values the command line changed."""
    ev, tr, p = spec.evaluation, spec.training, spec.precision
    if not ev.run_validation:
        ev.evaluation_strategy = "no"
    if ("precision", "precision") not in cli_keys:
        if ("precision", "use_fp16") in cli_keys and p.use_fp16:
            p.precision = "fp16"
        elif ("precision", "mixed_precision") in cli_keys and p.mixed_precision is not None:
            p.precision = "bf16" if p.mixed_precision else "32"
    if ("optimizer", "optim") in cli_keys:
        derived["optim_fused_on_cuda"] = False
    if ("training", "per_device_eval_batch_size") in cli_keys:
        derived["eval_batch_from_train"] = False
    elif derived.get("eval_batch_from_train"):  # causal_lm: the evaluation batch follows the training batch
        tr.per_device_eval_batch_size = tr.per_device_train_batch_size
    derived["metric_greater_is_better"] = ev.metric_for_best_model not in LOWER_IS_BETTER
    if ("training", "num_train_epochs") in cli_keys:
        derived["epochs_from_min_update_steps"] = False
    elif ("training", "min_update_steps") in cli_keys:
        derived["epochs_from_min_update_steps"] = tr.min_update_steps is not None
    derived.setdefault("epochs_from_min_update_steps", False)
    derived.setdefault("name", spec.name or f"{spec.task}_finetune")
    return derived
