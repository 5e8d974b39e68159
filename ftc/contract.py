"""What `ftc compile` and the runtime agree on: the resolved config's name and format, the runtime's modules and
command-line grammar, and the constants both sides (and the targets) name.

Standard library only, and nothing from ftc: every layer may import it, and it imports none of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

# The resolved config `ftc compile` writes and the runtime reads.
CONFIG_NAME = "ftc.resolved.json"
# Its format: raise it whenever the runtime could misread a config of the previous format.
CONFIG_FORMAT = 1
# Keys of the resolved config that are not spec sections: the header, the spec's folder, the derived values.
HEADER_KEY = "ftc"
META_KEYS = (HEADER_KEY, "base_dir", "derived")

RUNTIME_MODULE = "ftc.runtime"  # python -m ftc.runtime --config ftc.resolved.json [--<parameter> VALUE ...]
RAY_ENTRY_MODULE = "ftc.runtime.ray_entry"  # the ray target's entrypoint
RAY_JOB_ENV = "FTC_RAY_JOB"  # the ray target's job document (config and Ray Train settings), as JSON
CHECK_ENV = "FTC_CHECK"  # FTC_CHECK=rendezvous: join the process group and stop, on every target
CHECKS = ("rendezvous",)
MODEL_FOLDER = "pytorch_model_folder"  # TrainingArguments.output_dir under the run's output_dir
ORT_UNAVAILABLE = (  # the runtime's refusal of ort.apply_ort, and lint rule FTC107's message
    "ONNX Runtime training cannot run with transformers 5 / torch 2.13 (ORTTrainer no longer imports); "
    "set apply_ort: false and use precision: 16 or use_fast_kernels for speed"
)

# Runtime arguments launchers add on their own (deepspeed passes --local_rank=N): accepted and ignored.
IGNORED_ARGS = ("local_rank", "local-rank")
HELP_ARGS = ("-h", "--help")
HELP = "help"  # the name runtime_arguments gives -h and --help


class ArgumentError(ValueError):
    """A runtime argument that is not `--<parameter> VALUE`."""


def runtime_arguments(argv: Sequence[str]) -> Iterator[tuple[str, str]]:
    """The runtime's arguments as (name, value text) pairs, in order.

    `--name value` and `--name=value`; `--name` alone (or before another `--`) means `true`; -h and --help
    give (HELP, "true"); the IGNORED_ARGS are skipped. ArgumentError for a word that is not one of these.
    """
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in HELP_ARGS:
            yield HELP, "true"
            i += 1
            continue
        if not arg.startswith("--") or len(arg) == 2:
            raise ArgumentError(f"unexpected argument {arg!r}; parameters are given as --name value")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
            value = argv[i + 1] if has_value else "true"
            i += 2 if has_value else 1
        else:
            i += 1
        if name not in IGNORED_ARGS:
            yield name, value


def config_problem(header: object, version: str) -> str | None:
    """Why ftc `version` must not run a resolved config whose header is `header`; None when it may."""
    if not isinstance(header, dict):
        return f"it has no {HEADER_KEY!r} header; compile the spec again with this ftc (ftc {version})"
    written_by, config_format = header.get("version"), header.get("format")
    if written_by == version and config_format == CONFIG_FORMAT:
        return None
    spec = header.get("spec") or "the spec"
    by = f"ftc {written_by}" if isinstance(written_by, str) else "an ftc without a version"
    install = f"run it with ftc {written_by} (pip install 'ftc=={written_by}'), or " if isinstance(written_by, str) else ""
    return (
        f"it was compiled by {by} (config format {config_format}), and this is ftc {version} (config format "
        f"{CONFIG_FORMAT}): {install}compile {spec} again with this ftc (ftc compile {spec} -t <target>)"
    )
