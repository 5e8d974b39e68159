"""Entry point of the shared runtime: parse the command line, load the config, run the task.

Errors that are the user's to fix (bad data, unknown parameter, missing model) print one line, secrets masked,
to stderr and exit non-zero, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from ftc.errors import FtcError
from ftc.runtime.config import USAGE, ensure_output_dir, load_config, parse_args
from ftc.runtime.errors import Stopped
from ftc.spec.secrets import mask_secrets

PROG = "ftc.runtime"


def main(argv: list[str] | None = None) -> int:
    """Run `python -m ftc.runtime` with `argv`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    ok = False
    try:
        args = parse_args(argv)
        if args.help:
            print(USAGE, end="")
            return 0
        if not args.config:
            print(USAGE, end="", file=sys.stderr)
            print(f"{PROG}: error: --config is required", file=sys.stderr)
            return 2
        cfg = load_config(args.config, args.overrides)
        ensure_output_dir(cfg.output_dir)  # before the heavy imports and any loading
        from ftc.runtime.trainer import run

        run(cfg)
        ok = True
        return 0
    except FtcError as exc:
        kind = "" if isinstance(exc, Stopped) else "error: "  # "stopped by SIGTERM ...": not the user's mistake
        print(f"{PROG}: {kind}{mask_secrets(str(exc))}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        _end_distributed(barrier=ok)


def _end_distributed(barrier: bool) -> None:
    """Leave the process group cleanly (torchrun ranks otherwise abort at exit); no barrier after a failure."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            if barrier:
                dist.barrier()
        finally:
            dist.destroy_process_group()
