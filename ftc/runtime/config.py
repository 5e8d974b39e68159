"""The runtime's configuration: `ftc.resolved.json`, command-line overrides, and path resolution.

`python -m ftc.runtime --config PATH [--output_dir DIR] [--<parameter> VALUE ...]`

A parameter is named by its leaf name or an alias (`--learning_rate 1e-4`, `--lr 1e-4`) or by
its dotted path (`--training.seed 3`); VALUE is read as YAML, like a value in the spec. Relative
paths in the config resolve against the spec's folder (the config's folder joined with its
`base_dir`); relative paths given on the command line resolve against the current directory.

The config must be of this ftc's version and config format (ftc.contract); it is validated with the spec's
sections alone (SpecBase: no targets), so no backend or compiler module is loaded.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ftc import __version__
from ftc.contract import HEADER_KEY, HELP, META_KEYS, ArgumentError, config_problem, runtime_arguments
from ftc.errors import UnreadableSpec
from ftc.runtime.errors import UsageError
from ftc.runtime.storage import local_folder
from ftc.spec.arguments import argument_value
from ftc.spec.derived import EPOCHS, MIN_UPDATE_STEPS, Derived, derive, follow_derived
from ftc.spec.keys import accepted_names, leaf_index
from ftc.spec.model import SECTION_ALIASES, SpecBase
from ftc.spec.secrets import looks_like_secret, mask_secrets
from ftc.spec.uris import is_uri

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
    """Split argv into --config and `--name value` overrides (the grammar of ftc.contract.runtime_arguments)."""
    config: str | None = None
    overrides: list[Override] = []
    try:
        for name, value in runtime_arguments(argv):
            if name == HELP:
                return Args(config, overrides, help=True)
            if name == "config":
                config = value
            else:
                overrides.append(Override(name, value))
    except ArgumentError as exc:
        raise UsageError(str(exc)) from None
    return Args(config, overrides)


@dataclass
class RunConfig:
    """A validated spec, its derived values, and where its relative paths point."""

    spec: SpecBase
    derived: Derived
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

    def uri(self, section: str, name: str) -> str | None:
        """A file or folder parameter that names a remote location (s3://, gs://, ...), as written; None for a
        local path or an unset one (see ftc.spec.uris)."""
        value = getattr(getattr(self.spec, section), name)
        return str(value) if value and is_uri(str(value)) else None

    def model_ref(self, section: str, name: str) -> str | None:
        """A model or tokenizer: a local folder (absolute) when it exists, else the value as a hub id."""
        value = getattr(getattr(self.spec, section), name)
        if value is None or value == "":
            return None
        local = self.path(section, name)
        return str(local) if local is not None and local.exists() else str(value)

    @property
    def output_uri(self) -> str | None:
        """checkpointing.output_dir when it is a remote folder (s3://...): outputs are staged in `output_dir`
        and uploaded there (callbacks.UploadCheckpoints, trainer.publish_outputs)."""
        return self.uri("checkpointing", "output_dir")

    @property
    def output_dir(self) -> Path:
        """The local output folder: checkpointing.output_dir, or, when that is remote, its staging folder on
        this node (under $FTC_CACHE_DIR/staging, keyed by the URI: a local mirror of the remote folder)."""
        uri = self.output_uri
        if uri is not None:
            return local_folder(uri, "staging")
        out = self.path("checkpointing", "output_dir")
        assert out is not None
        return out


def load_config(config_path: str | Path, overrides: list[Override] | None = None, cwd: Path | None = None) -> RunConfig:
    """Read `ftc.resolved.json`, apply overrides, validate into the typed spec."""
    path = Path(config_path)
    raw = _read_config(path)
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
        spec = SpecBase.model_validate(params)
        compiled = Derived.from_config(raw.get("derived") or {})
    except ValidationError as exc:
        raise UsageError(_validation_message(exc, given, path)) from None
    except TypeError as exc:
        raise UsageError(f"{path}: derived: {exc}; compile the spec again with this ftc") from None
    derived = _derive_again(spec, compiled, cli_keys)
    base_dir = str(raw.get("base_dir") or ".")
    root = Path(os.path.normpath(path.resolve().parent / base_dir))
    return RunConfig(spec=spec, derived=derived, config_path=path, root=root, cli_keys=cli_keys, cwd=cwd or Path.cwd())


def _read_config(path: Path) -> dict[str, Any]:
    """The JSON of a resolved config of this ftc's version and format; UsageError otherwise."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(raw, dict) or "task" not in raw:
        raise UsageError(f"{path} is not an ftc runtime config (ftc.resolved.json written by `ftc compile`)")
    problem = config_problem(raw.get(HEADER_KEY), __version__)
    if problem is not None:
        raise UsageError(f"{path}: {problem}")
    return raw


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
    model: type[BaseModel] | None = SpecBase
    out: list[str] = []
    for i, part in enumerate(parts):
        if model is None:  # inside a mapping such as env.vars: keys are free
            out.append(part)
            continue
        names = accepted_names(model)
        if part not in names or (i == 0 and part in ("lint", "version", "task")):
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
    """A command-line value as the runtime reads it (ftc.spec.arguments.argument_value); UsageError if unreadable."""
    try:
        return argument_value(text, key)
    except UnreadableSpec as exc:
        raise UsageError(str(exc)) from None


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


def _derive_again(spec: SpecBase, compiled: Derived, cli_keys: set[tuple[str, ...]]) -> Derived:
    """What the compiler derived, derived again (by the same function) after the command line changed parameters.

    A parameter set on the command line is given; one the compiler recorded as a default stays one. A
    min_update_steps set on the command line stands in for num_train_epochs unless that is set there too.
    """
    cli = {".".join(key) for key in cli_keys}
    defaults = compiled.defaults() - cli
    if MIN_UPDATE_STEPS in cli and EPOCHS not in cli:
        defaults.add(EPOCHS)
    _follow_precision_flags(spec, cli_keys)
    derived = derive(spec, defaults)
    follow_derived(spec, derived)
    return derived


def _follow_precision_flags(spec: SpecBase, cli_keys: set[tuple[str, ...]]) -> None:
    """llama-recipes' use_fp16 / mixed_precision on the command line set precision, unless it is set there too."""
    p = spec.precision
    if ("precision", "precision") in cli_keys:
        return
    if ("precision", "use_fp16") in cli_keys and p.use_fp16:
        p.precision = "fp16"
    elif ("precision", "mixed_precision") in cli_keys and p.mixed_precision is not None:
        p.precision = "bf16" if p.mixed_precision else "32"
