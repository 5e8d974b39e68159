"""Whole-process latency of `ftc compile --target local` and `ftc lint` on the examples.

Each command runs as a fresh process, interleaved with a baseline (`python -c pass`, the bare
interpreter start) so both see the same machine load; reports medians and the ratio to the baseline.
Usage: python bench/cli_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(str(p) for p in (ROOT / "examples").glob("*.yaml"))


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    ftc = [sys.executable, "-m", "ftc.cli"]
    with tempfile.TemporaryDirectory() as out:
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "ftc compile --target local": [*ftc, "compile", EXAMPLES[0], "--target", "local", "-o", out],
            "ftc lint examples/*.yaml": [*ftc, "lint", *EXAMPLES],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for name, cmd in commands.items():
            wall(cmd)  # warm the file cache
        for _ in range(runs):
            for name, cmd in commands.items():
                times[name].append(wall(cmd))
    base = statistics.median(times["python -c pass (baseline)"])
    print(f"{'command':32} {'median s':>9} {'min s':>7} {'x baseline':>10}   ({runs} runs each, interleaved)")
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:32} {med:9.3f} {min(samples):7.3f} {med / base:10.1f}")


if __name__ == "__main__":
    main()
