"""llama-recipes runs as ftc specs: a command line (`torchrun ... finetuning.py --flags`, `python -m
llama_recipes.finetuning ...`, `srun torchrun ...`) or a train_config written as YAML/JSON.

llama-recipes reads its flags with `fire` and copies each onto every config dataclass that has the attribute
(`update_config`): train_config, fsdp_config, the PEFT configs and wandb_config; `--fsdp_config.pure_bf16`
targets one. Defaults: src/llama_recipes/configs/{training,fsdp,peft,wandb}.py, see
tests/importers/fixtures/llama_recipes/SOURCES.md for the commit.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.errors import Location
from ftc.importers.base import Converted, ImportFailed, ImportRefused, Imported, Key, read_yaml_source

TOOL = "llama-recipes"
DEFAULT = "llama-recipes default"
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")

# llama-recipes name -> (ftc key, kind); kind is a type or the tuple of values llama-recipes accepts.
TRAIN: dict[str, tuple[Key, Any]] = {
    "model_name": (("model", "model_selector_output"), str),
    "tokenizer_name": (("model", "tokenizer_name"), str),
    "enable_fsdp": (("fsdp", "enable_fsdp"), bool),
    "low_cpu_fsdp": (("fsdp", "low_cpu_fsdp"), bool),
    "run_validation": (("evaluation", "run_validation"), bool),
    "batch_size_training": (("training", "per_device_train_batch_size"), int),
    "batching_strategy": (("data", "batching_strategy"), ("packing", "padding")),
    "context_length": (("data", "max_seq_length"), int),
    "gradient_accumulation_steps": (("training", "gradient_accumulation_steps"), int),
    "gradient_clipping": (("training", "gradient_clipping"), bool),
    "gradient_clipping_threshold": (("training", "max_grad_norm"), float),
    "num_epochs": (("training", "num_train_epochs"), int),
    "max_eval_step": (("evaluation", "max_eval_steps"), int),
    "num_workers_dataloader": (("training", "dataloader_num_workers"), int),
    "lr": (("optimizer", "learning_rate"), float),
    "weight_decay": (("optimizer", "weight_decay"), float),
    "gamma": (("optimizer", "gamma"), float),
    "seed": (("training", "seed"), int),
    "use_fp16": (("precision", "use_fp16"), bool),
    "mixed_precision": (("precision", "mixed_precision"), bool),
    "val_batch_size": (("training", "per_device_eval_batch_size"), int),
    "use_peft": (("lora", "apply_lora"), bool),
    "from_peft_checkpoint": (("lora", "from_peft_checkpoint"), str),
    "output_dir": (("checkpointing", "output_dir"), str),
    "freeze_layers": (("training", "freeze_layers"), bool),
    "num_freeze_layers": (("training", "num_freeze_layers"), int),
    "one_gpu": (("resources", "one_gpu"), bool),
    "save_model": (("checkpointing", "save_model"), bool),
    "dist_checkpoint_root_folder": (("fsdp", "dist_checkpoint_root_folder"), str),
    "dist_checkpoint_folder": (("fsdp", "dist_checkpoint_folder"), str),
    "save_optimizer": (("fsdp", "save_optimizer"), bool),
    "use_fast_kernels": (("precision", "use_fast_kernels"), bool),
    "use_wandb": (("tracking", "use_wandb"), bool),
    "save_metrics": (("tracking", "save_metrics"), bool),
    "flop_counter": (("tracking", "flop_counter"), bool),
    "flop_counter_start": (("tracking", "flop_counter_start"), int),
    "use_profiler": (("tracking", "use_profiler"), bool),
    "profiler_dir": (("tracking", "profiler_dir"), str),
    # fsdp_config
    "sharding_strategy": (("fsdp", "sharding_strategy"), ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD")),
    "hsdp": (("fsdp", "hsdp"), bool),
    "sharding_group_size": (("fsdp", "sharding_group_size"), int),
    "replica_group_size": (("fsdp", "replica_group_size"), int),
    "checkpoint_type": (("fsdp", "checkpoint_type"), ("SHARDED_STATE_DICT", "FULL_STATE_DICT")),
    "fsdp_activation_checkpointing": (("fsdp", "fsdp_activation_checkpointing"), bool),
    "fsdp_cpu_offload": (("fsdp", "fsdp_cpu_offload"), bool),
    "pure_bf16": (("precision", "pure_bf16"), bool),
    "optimizer": (("fsdp", "fsdp_optimizer"), ("AdamW", "anyprecision")),
    # lora_config, llama_adapter_config, prefix_config
    "r": (("lora", "lora_r"), int),
    "lora_alpha": (("lora", "lora_alpha"), int),
    "lora_dropout": (("lora", "lora_dropout"), float),
    "target_modules": (("lora", "target_modules"), list),
    "bias": (("lora", "bias"), str),
    "adapter_len": (("lora", "adapter_len"), int),
    "adapter_layers": (("lora", "adapter_layers"), int),
    "num_virtual_tokens": (("lora", "num_virtual_tokens"), int),
}
WANDB = ("project", "entity", "job_type", "tags", "group", "notes", "mode")
CONFIGS = ("train_config", "fsdp_config", "lora_config", "llama_adapter_config", "prefix_config", "wandb_config")
QUANTIZATION = ("4bit", "8bit")
PEFT_METHODS = ("lora", "llama_adapter")  # prefix raises RuntimeError in generate_peft_config

# train_config / fsdp_config defaults that differ from ftc's causal_lm defaults.
DEFAULTS: dict[str, Any] = {
    "batch_size_training": 4,
    "context_length": 4096,
    "gradient_clipping": False,
    "num_epochs": 3,
    "num_workers_dataloader": 1,
    "mixed_precision": True,
    "val_batch_size": 1,  # ftc's eval batch follows the train batch when not given
}
LORA_DEFAULTS: dict[str, Any] = {"lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
DATASET = "samsum_dataset"
MODEL = "PATH/to/LLAMA/7B"
NO_EQUIVALENT = {
    "dataset": "a llama-recipes dataset recipe; ftc reads data files: set data.train_file_path",
    "quantization_config": "ftc's QLoRA sets its own bitsandbytes settings",
    "inference_mode": "ftc trains the adapter",
    "task_type": "ftc's causal_lm uses CAUSAL_LM",
    "max_train_step": "0 trains every step, as ftc does by default",
}
# Names converted in code rather than through a table above (the functions below), for `ftc docs --source`.
CONVERTED: dict[str, Converted] = {
    "quantization": Converted(("precision.quantization",), "4bit or 8bit: QLoRA"),
    "peft_method": Converted(("lora.peft_method",), "lora or llama_adapter; prefix is refused"),
    "max_train_step": Converted(("training.max_steps",), "0 (every step) is ftc's default and is not written"),
    "wandb_config.*": Converted(
        ("tracking.wandb_config.*",), "project, entity, job_type, tags, group, notes, mode"
    ),
}
TORCHRUN_BARE = {"--standalone", "--no_python", "--no-python", "--run_path", "--run-path", "-m", "--module"}
SCRIPT = re.compile(r"(^|/)finetuning(\.py)?$|^llama_(recipes|cookbook)\.finetuning$")
LAUNCHER = re.compile(r"^(torchrun|python(3(\.[0-9]+)?)?)$")
SBATCH_NODES = re.compile(r"^#SBATCH\s+(?:--nodes=|--nodes\s+|-N\s*)(?P<count>[^\s#]+)\s*(#.*)?$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Flag:
    """One llama-recipes setting as fire hands it over: its name, value and where it was written."""

    name: str
    value: Any
    where: Location
    origin: str


@dataclass
class Launch:
    """What the launcher line asks for: environment variables, nodes, processes per node."""

    env: list[Flag]
    nodes: int = 1
    per_node: int = 1
    nodes_origin: str = ""
    per_node_origin: str = ""
    srun: bool = False


class LlamaRecipesImporter:
    """llama-recipes command line or train_config file -> ftc settings."""

    name = "llama-recipes"

    def detect(self, path: Path, text: str) -> bool:
        """A command running llama-recipes' finetuning, or a config naming train_config fields only it has."""
        if path.suffix in CONFIG_SUFFIXES:
            keys = "batch_size_training|use_peft|enable_fsdp|peft_method|num_workers_dataloader"
            return re.search(rf"(^|[{{,])\s*\"?({keys})\"?\s*:", text, re.MULTILINE) is not None
        command = text.replace("\\\n", " ")
        return re.search(r"(torchrun|python[0-9.]*)\b[^\n]*\bfinetuning\b", command) is not None

    def convert(self, path: Path) -> Imported:
        """The run's settings: its flags, llama-recipes' defaults where ftc's differ, its launcher's resources."""
        out = Imported(str(path), TOOL)
        if path.suffix in CONFIG_SUFFIXES:
            flags, launch = _config_flags(path), Launch([], 1, 1, *(["a train_config names no launcher"] * 2))
        else:
            flags, launch = _command(path)
        out.set(("task",), "causal_lm", "llama-recipes trains causal language models")
        given = {flag.name: flag for flag in flags}  # a flag given twice: fire keeps the last
        _check_combinations(given)
        for flag in given.values():
            _convert_flag(out, flag)
        _defaults(out, given)
        _resources(out, launch)
        return out


def _config_flags(path: Path) -> list[Flag]:
    """A train_config file's keys as flags; a nested `fsdp_config:` (or other config) mapping as dotted flags."""
    doc = read_yaml_source(path)
    flags = []
    for name, value in doc.data.items():
        if name in CONFIGS and isinstance(value, dict):
            for inner, inner_value in value.items():
                where = doc.locate((name, inner))
                flags.append(_flag(f"{name}.{inner}", inner_value, where, f"{name}.{inner}"))
        else:
            flags.append(_flag(str(name), value, doc.locate((name,)), str(name)))
    return flags


def _flag(name: str, value: Any, where: Location, origin: str) -> Flag:
    """A flag under one name per setting: `fsdp_config.x` and `x` are both `x` (ftc has one key for both),
    wandb fields are `wandb_config.x`, fire's `--max-train-step` is max_train_step."""
    name = name.replace("-", "_")
    section, _, param = name.rpartition(".")
    if section in CONFIGS and section != "wandb_config":
        name = param
    elif not section and param in WANDB:
        name = f"wandb_config.{param}"
    return Flag(name, value, where, origin)


def _command(path: Path) -> tuple[list[Flag], Launch]:
    """The finetuning command of the file: the variables it exports or sets before the command, the launcher's
    options and llama-recipes' flags."""
    text = _read(path)
    commands = _commands(text, str(path))
    found = [c for c in commands if any(SCRIPT.search(word) for word, _ in c)]
    if len(found) != 1:
        count = "no" if not found else str(len(found))
        raise ImportFailed(Location(str(path)), "", f"holds {count} llama-recipes finetuning commands; give one")
    tokens = found[0]
    exported = [word for c in commands if c[0][0] == "export" for word in c[1:] if ASSIGNMENT.match(word[0])]
    while tokens and ASSIGNMENT.match(tokens[0][0]):
        exported.append(tokens.pop(0))
    env: dict[str, Flag] = {}  # a variable set twice: the shell keeps the last value
    for assignment, where in exported:
        name, value = assignment.split("=", 1)
        env[name] = Flag(name, _expand(value, env), where, f"{assignment} before the command")
    launch = Launch(list(env.values()))
    if tokens and tokens[0][0] == "srun":
        launch.srun = True
        _sbatch_nodes(text, str(path), launch)
        _srun(tokens, launch)
    rest = _launcher(tokens, launch, Location(str(path)))
    return _fire_flags(rest), launch


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailed(Location(str(path)), "", f"cannot be read as UTF-8 text: {exc}") from None


def _expand(value: str, env: dict[str, Flag]) -> str:
    """`$NAME` and `${NAME}` of variables set earlier in the file replaced by their values, as the shell does;
    others are left for the node's environment."""
    def known(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        return str(env[name].value) if name in env else match[0]

    return re.sub(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})", known, value)


def _sbatch_nodes(text: str, file: str, launch: Launch) -> None:
    """An `#SBATCH --nodes=N` (or `-N N`) directive: the nodes `srun` runs on when it names none itself."""
    for number, line in enumerate(text.splitlines(), 1):
        if match := SBATCH_NODES.match(line):
            where = Location(file, number, match.start("count") + 1)
            launch.nodes = _count("#SBATCH --nodes", match["count"], where)
            launch.nodes_origin = f"#SBATCH --nodes={match['count']}"


def _commands(text: str, file: str) -> list[list[tuple[str, Location]]]:
    """The file's commands as tokens with their positions; backslash-continued lines are one command, `#` starts
    a comment."""
    commands: list[list[tuple[str, Location]]] = [[]]
    for number, line in enumerate(text.splitlines(), 1):
        continued = line.rstrip().endswith("\\")
        body = line.rstrip().removesuffix("\\")
        try:
            words = shlex.split(body, comments=True)
        except ValueError as exc:
            if "finetuning" in body:
                raise ImportFailed(Location(file, number), "", f"cannot be split as a shell command: {exc}") from None
            words = []  # another command (a heredoc, a quote left open): not the one imported
        start = 0
        for word in words:
            column = body.find(word, start)
            start = column + len(word) if column >= 0 else start
            commands[-1].append((word, Location(file, number, column + 1 if column >= 0 else 1)))
        if not continued and commands[-1]:
            commands.append([])
    return [c for c in commands if c]


def _srun(tokens: list[tuple[str, Location]], launch: Launch) -> None:
    """Drop `srun` and its options; its node count (`-N`, `--nodes`) is the job's unless torchrun gives one."""
    tokens.pop(0)
    while tokens and tokens[0][0].startswith("-"):
        option, where = tokens.pop(0)
        name, _, value = option.partition("=")
        if name in ("-N", "--nodes"):
            value = value or tokens.pop(0)[0]
            launch.nodes, launch.nodes_origin = _count(name, value, where), f"srun {name} {value}"
        elif not value and tokens and not tokens[0][0].startswith("-") and not _is_launcher(tokens[0][0]):
            tokens.pop(0)


def _is_launcher(word: str) -> bool:
    return LAUNCHER.match(Path(word).name) is not None


def _launcher(tokens: list[tuple[str, Location]], launch: Launch, file: Location) -> list[tuple[str, Location]]:
    """Read `torchrun [options] finetuning.py` or `python [-m] finetuning`; the tokens after the script."""
    if not tokens or not _is_launcher(tokens[0][0]):
        where = tokens[0][1] if tokens else file
        raise ImportFailed(where, "", "the command must run finetuning with torchrun or python")
    launcher, _ = tokens.pop(0)
    torchrun = Path(launcher).name == "torchrun"
    launch.nodes_origin = launch.nodes_origin or ("torchrun --nnodes default 1" if torchrun else "python: one node")
    launch.per_node_origin = "torchrun --nproc_per_node default 1" if torchrun else "python runs one process"
    while tokens and not SCRIPT.search(tokens[0][0]):
        option, where = tokens.pop(0)
        name, _, value = option.partition("=")
        if not value and name not in TORCHRUN_BARE and tokens and not SCRIPT.search(tokens[0][0]):
            value = tokens.pop(0)[0]
        if name == "--nnodes":
            launch.nodes, launch.nodes_origin = _count(name, value, where), f"{name} {value}"
        elif name in ("--nproc_per_node", "--nproc-per-node"):
            launch.per_node, launch.per_node_origin = _count(name, value, where), f"{name} {value}"
    if not tokens:
        raise ImportFailed(file, "", "names no llama-recipes finetuning script")
    tokens.pop(0)
    return tokens


def _count(flag: str, value: str, where: Location) -> int:
    """A node or process count; elastic ranges and `gpu`/`auto` are not a fixed count ftc can ask for."""
    if not value.isdigit() or int(value) < 1:
        raise ImportFailed(where, flag, f"{value!r}: ftc needs a fixed positive number")
    return int(value)


def _fire_flags(tokens: list[tuple[str, Location]]) -> list[Flag]:
    """Flags as fire reads them: `--name value`, `--name=value`, or a bare `--name` (True); values are Python
    literals where they parse as one, else text."""
    flags = []
    while tokens:
        word, where = tokens.pop(0)
        if not word.startswith("--"):
            raise ImportFailed(where, word, "is not a --flag; llama-recipes' finetuning takes --name value flags")
        name, equals, text = word[2:].partition("=")
        if not equals and tokens and not tokens[0][0].startswith("--"):
            text, equals = tokens.pop(0)[0], "="
        value = _literal(text) if equals else True
        flags.append(_flag(name, value, where, f"--{name}" if value is True and not equals else f"--{name} {text}"))
    return flags


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _check_combinations(given: dict[str, Flag]) -> None:
    """What llama-recipes itself refuses before training: a prefix or FSDP llama_adapter PEFT method, a
    quantization other than 4bit/8bit, and 8bit quantization with FSDP."""
    method = given.get("peft_method")
    if method is not None and method.value not in PEFT_METHODS:
        raise ImportRefused(method.where, _flag_name(method), method.value, list(PEFT_METHODS), TOOL)
    fsdp = given.get("enable_fsdp")
    fsdp_on = fsdp is not None and fsdp.value is True
    if fsdp_on and method is not None and method.value == "llama_adapter":
        raise ImportRefused(method.where, _flag_name(method), method.value, ["lora (with --enable_fsdp)"], TOOL)
    quantization = given.get("quantization")
    if quantization is None:
        return
    if quantization.value not in (True, False, None, *QUANTIZATION):
        raise ImportRefused(quantization.where, _flag_name(quantization), quantization.value, list(QUANTIZATION), TOOL)
    if fsdp_on and quantization.value in (True, "8bit"):
        accepted = ["4bit (with --enable_fsdp)"]
        raise ImportRefused(quantization.where, _flag_name(quantization), quantization.value, accepted, TOOL)


def _convert_flag(out: Imported, flag: Flag) -> None:
    """One flag as an ftc setting, or an entry in the list of what was not imported."""
    section, _, field = flag.name.rpartition(".")
    if section == "wandb_config" and field in WANDB:
        out.set(("tracking", *flag.name.split(".")), flag.value, flag.origin)
    elif flag.name == "quantization":
        _quantization(out, flag)
    elif flag.name == "peft_method":
        out.set(("lora", "peft_method"), flag.value, flag.origin)
    elif flag.name == "max_train_step" and flag.value != 0:
        out.set(("training", "max_steps"), _typed(flag, int), flag.origin)
    elif flag.name in TRAIN:
        key, kind = TRAIN[flag.name]
        out.set(key, _typed(flag, kind), flag.origin)
    elif (section or flag.name) in NO_EQUIVALENT:
        out.skip(flag.origin, flag.value, NO_EQUIVALENT[section or flag.name])
    else:
        out.skip(flag.origin, flag.value, "llama-recipes ignores unknown parameters (it prints a warning)")


def _quantization(out: Imported, flag: Flag) -> None:
    """`--quantization 4bit|8bit` is QLoRA; a bare `--quantization` is 8bit, as llama-recipes reads it."""
    if flag.value in (False, None):
        return
    value = "8bit" if flag.value is True else flag.value
    origin = flag.origin if flag.value is not True else f"{flag.origin} (llama-recipes reads a bare flag as 8bit)"
    out.set(("precision", "quantization"), value, origin)


def _typed(flag: Flag, kind: Any) -> Any:
    """The flag's value as the dataclass field holds it, or refused naming the values llama-recipes accepts."""
    value, accepted = flag.value, _accepted(flag.value, kind)
    if accepted:
        raise ImportRefused(flag.where, _flag_name(flag), value, accepted, TOOL)
    if kind is list:
        return list(value)
    return str(value) if kind is str else value


def _accepted(value: Any, kind: Any) -> list[str]:
    """What llama-recipes accepts for a field of `kind` when `value` is not one of them; empty when it is."""
    if isinstance(kind, tuple):
        return [] if value in kind else list(kind)
    if kind is bool and not isinstance(value, bool):
        return ["True", "False (fire reads other words as text, which llama-recipes takes as true)"]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        return ["an integer"]
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return ["a number"]
    if kind is list and not isinstance(value, (list, tuple)):
        return ["a list such as \"['q_proj','v_proj']\" (peft reads text as a regular expression)"]
    return []


def _flag_name(flag: Flag) -> str:
    return flag.origin.split(" ")[0]


def _defaults(out: Imported, given: dict[str, Flag]) -> None:
    """llama-recipes' defaults that differ from ftc's, for what the run leaves out."""
    for name, value in DEFAULTS.items():
        if name not in given:
            key, _ = TRAIN[name]
            out.set(key, value, f"{DEFAULT} {name}: {json.dumps(value)}")
    if "model_name" not in given:
        out.set(("model", "model_selector_output"), MODEL, f"{DEFAULT} model_name: a placeholder, set the model")
        out.warnings.append(f"{out.source}: model_name is not given: llama-recipes' default {MODEL} is a placeholder")
    scheduler = "llama-recipes decays the learning rate by gamma after each epoch (StepLR)"
    out.set(("optimizer", "lr_scheduler_type"), "step", scheduler)
    if "dataset" not in given:
        out.skip("dataset", DATASET, f"{DEFAULT}; {NO_EQUIVALENT['dataset']}")
    use_peft = given.get("use_peft")
    method = given.get("peft_method")
    if use_peft is not None and use_peft.value is True:
        out.set(("lora", "merge_lora_weights"), False, "llama-recipes saves the PEFT adapter, not a merged model")
        if method is None or method.value == "lora":
            _lora_defaults(out, given)
    wandb = given.get("use_wandb")
    if wandb is not None and wandb.value is True and "wandb_config.project" not in given:
        out.set(("tracking", "wandb_config", "project"), "llama_recipes", f"{DEFAULT} wandb_config.project")


def _lora_defaults(out: Imported, given: dict[str, Flag]) -> None:
    for name, value in LORA_DEFAULTS.items():
        if name not in given:
            out.set(TRAIN[name][0], value, f"{DEFAULT} lora_config.{name}: {json.dumps(value)}")


def _resources(out: Imported, launch: Launch) -> None:
    """The launcher's nodes and processes per node, and the environment variables the command sets."""
    out.set(("resources", "nodes"), launch.nodes, launch.nodes_origin)
    out.set(("resources", "processes_per_node"), launch.per_node, launch.per_node_origin)
    if launch.srun:
        out.set(("targets", "enabled"), ["slurm"], "srun: the command runs in a SLURM job")
    elif launch.nodes > 1:
        out.set(("targets", "enabled"), ["slurm", "ray"], f"{launch.nodes_origin}: a job of several nodes")
    for flag in launch.env:
        out.set(("env", "vars", flag.name), flag.value, flag.origin)


IMPORTER = LlamaRecipesImporter()
