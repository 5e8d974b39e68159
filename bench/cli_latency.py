"""Whole-process latency of `ftc compile --target slurm`, side by side with torchx's slurm dry run.

The peer is `torchx run --dryrun --scheduler slurm dist.ddp -j 2x4 --script train.py` (torchx pinned to
TORCHX_VERSION, installed on first use into bench/.venv-torchx, a venv of its own). Every command runs as
a fresh process, interleaved with the others so all see the same machine load; the bare interpreter
(`python -c pass`) and `ftc lint` on the examples run in the same rounds. Both sides run with their
bytecode caches written (as after a pip install): PYTHONDONTWRITEBYTECODE is dropped from the environment.
Reports medians of wall and CPU time, and ftc / torchx per round and of the medians.

Two floor rows bound what any CLI on ftc's stack can reach: importing the libraries the compile path is
built on (pydantic with one model validated, Jinja2, PyYAML; then typer too) and nothing of ftc.
Usage: python bench/cli_latency.py [--runs N] [--spec examples/causal_lm.yaml]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(str(p) for p in (ROOT / "examples").glob("*.yaml"))
TORCHX_VERSION = "0.7.0"
TORCHX_VENV = ROOT / "bench" / ".venv-torchx"
FTC = "ftc compile --target slurm"
TORCHX = "torchx run --dryrun --scheduler slurm dist.ddp -j 2x4"
FLOOR = "from pydantic import BaseModel; import jinja2, yaml\nclass A(BaseModel):\n    x: int = 1\nA(x=2)"


def torchx_command() -> Path:
    """The pinned torchx console script, installing it into its own venv when missing or another version."""
    python = TORCHX_VENV / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('torchx'))"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == TORCHX_VERSION:
        return TORCHX_VENV / "bin" / "torchx"
    subprocess.run([sys.executable, "-m", "venv", str(TORCHX_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"torchx=={TORCHX_VERSION}"], check=True)
    return TORCHX_VENV / "bin" / "torchx"


def ftc_command() -> list[str]:
    """The `ftc` console script beside this interpreter (what a user runs), else `python -m ftc.cli`."""
    script = Path(sys.executable).parent / "ftc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ftc.cli"]


def timed(cmd: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `cmd` as a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(commands: dict[str, list[str]], runs: int, cwd: str) -> dict[str, list[tuple[float, float]]]:
    """`runs` rounds, each command once per round in turn, after one uncounted warm-up each."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for cmd in commands.values():
        timed(cmd, cwd, env)  # writes the bytecode caches, warms the file cache
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            samples[name].append(timed(cmd, cwd, env))
    return samples


def report(samples: dict[str, list[tuple[float, float]]], runs: int) -> None:
    """One row per command (medians, min, max), then ftc / torchx."""
    print(f"{'command':56} {'wall median s':>13} {'min':>6} {'max':>6} {'cpu median s':>12}   ({runs} runs each, interleaved)")
    for name, rows in samples.items():
        walls = [w for w, _ in rows]
        cpu = statistics.median(c for _, c in rows)
        print(f"{name:56} {statistics.median(walls):13.3f} {min(walls):6.3f} {max(walls):6.3f} {cpu:12.3f}")
    pairs = sorted(f[0] / t[0] for f, t in zip(samples[FTC], samples[TORCHX]))
    wall = statistics.median(w for w, _ in samples[FTC]) / statistics.median(w for w, _ in samples[TORCHX])
    cpu = statistics.median(c for _, c in samples[FTC]) / statistics.median(c for _, c in samples[TORCHX])
    print(f"ftc compile / torchx dry run: wall medians {wall:.2f}, cpu medians {cpu:.2f}; "
          f"per round median {statistics.median(pairs):.2f}, range {pairs[0]:.2f}-{pairs[-1]:.2f} (aim: at most 0.7)")
    torchx_cpu = statistics.median(c for _, c in samples[TORCHX])
    for name in (n for n in samples if n.startswith("floor")):
        print(f"{name} / torchx dry run: cpu medians {statistics.median(c for _, c in samples[name]) / torchx_cpu:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--spec", default=str(ROOT / "examples" / "causal_lm.yaml"))
    args = parser.parse_args()
    torchx = torchx_command()
    with tempfile.TemporaryDirectory(prefix="ftc-bench-") as work:
        Path(work, "train.py").write_text("print('train')\n")
        ftc = ftc_command()
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            FTC: [*ftc, "compile", str(Path(args.spec).resolve()), "--target", "slurm", "-o", f"{work}/build"],
            TORCHX: [str(torchx), "run", "--dryrun", "--scheduler", "slurm", "dist.ddp", "-j", "2x4", "--script", "train.py"],
            "ftc lint examples/*.yaml": [*ftc, "lint", *EXAMPLES],
            "floor: pydantic + jinja2 + yaml": [sys.executable, "-c", FLOOR],
            "floor: pydantic + jinja2 + yaml + typer": [sys.executable, "-c", FLOOR + "\nimport typer"],
        }
        report(measure(commands, args.runs, work), args.runs)


if __name__ == "__main__":
    main()
