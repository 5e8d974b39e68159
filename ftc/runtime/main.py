"""Entry point of the shared runtime: parse the command line, load the config, run the task.

Errors that are the user's to fix (bad data, unknown parameter, missing model) print one line, secrets masked,
to stderr and exit non-zero, without a traceback; anything else is a bug and keeps its traceback.

Check mode: with `FTC_CHECK=rendezvous` in the environment, every process loads the config, joins the
process group (gloo; torchrun's variables, or alone), all-reduces one number, prints one line
(`ftc check rendezvous: rank R/W local_rank L CUDA_VISIBLE_DEVICES=... SLURM_GPUS_ON_NODE=...`) and
exits 0 without loading data or a model: a scheduler's allocation and the rendezvous, proven on their own.
"""

from __future__ import annotations

import os
import sys

from ftc.contract import CHECK_ENV, CHECKS
from ftc.contract import RUNTIME_MODULE as PROG
from ftc.errors import FtcError
from ftc.runtime.config import USAGE, ensure_output_dir, load_config, parse_args
from ftc.runtime.errors import Stopped, UsageError
from ftc.spec.secrets import mask_secrets



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
        check = os.environ.get(CHECK_ENV)
        if check:
            check_rendezvous(check)
            ok = True
            return 0
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


def check_rendezvous(check: str) -> None:
    """FTC_CHECK=rendezvous: join the process group, all-reduce, print where this process runs; no training."""
    if check not in CHECKS:
        raise UsageError(f"{CHECK_ENV}={check!r} is not a check; the one there is: {', '.join(CHECKS)}")
    import torch
    import torch.distributed as dist

    if "WORLD_SIZE" in os.environ:
        dist.init_process_group("gloo")
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    total = torch.ones(1)
    dist.all_reduce(total)
    if int(total.item()) != world:
        raise UsageError(f"{CHECK_ENV}=rendezvous: the all-reduce gave {int(total.item())}, not the world size {world}")
    shown = " ".join(f"{name}={os.environ.get(name, '')}" for name in ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE"))
    local = os.environ.get("LOCAL_RANK", "0")
    print(f"ftc check rendezvous: rank {rank}/{world} local_rank {local} {shown}", flush=True)


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
