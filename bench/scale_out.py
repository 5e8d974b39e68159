"""Scale-out on CPU: 2-process DDP vs 1 process (scaling efficiency), and peak RSS per process for
DeepSpeed ZeRO-3 vs DDP on the same model.

Every run is the local target's run.sh of one spec (torchrun for two processes, gloo), each a fresh
process tree, interleaved so all see the same machine load, one torch thread per process (so two
processes use the machine's two cores, one process one core).

- Scaling: a tiny Llama (hidden 128, 4 layers) on 800 generated text rows, batch 8 per process,
  one epoch. samples/s is the Trainer's train_samples_per_second (all processes' samples / time in
  train()); efficiency = samples/s of 2 processes / (2 x samples/s of 1 process).
- Memory: a Llama of about 76M parameters (hidden 1024, 8 layers), 10 steps of batch 4, in two
  processes with DDP and with ZeRO-3 (parameters, gradients and Adam states sharded over the two).
  Peak RSS is the largest resident set of any process of the run (getrusage of the waited-for
  process tree, read by a wrapper process around each run).

Usage: python bench/scale_out.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.runtime.multiproc import launch_env  # noqa: E402  (the tests' launcher environment)

SPEC = """\
task: causal_lm
name: scale_out_bench
model: {model}
data:
  train_file_path: {train}
  max_seq_length: 128
  batching_strategy: padding
training:
  {length}
  per_device_train_batch_size: {batch}
  seed: 0
optimizer:
  optim: adamw_torch
  learning_rate: 0.001
evaluation:
  evaluation_strategy: "no"
checkpointing:
  save_model: false
  save_as_mlflow_model: false
resources:
  device: cpu
  processes_per_node: {processes}
"""
ZERO3 = "deepspeed:\n  apply_deepspeed: true\n  deepspeed_stage: '3'\n"

# Runs a command and prints the peak RSS (KiB) of its whole waited-for process tree.
PEAK_RSS = "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); " \
           "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"


def train(work: Path, name: str, spec: str) -> tuple[dict[str, float], int]:
    """Compile and run `spec`; returns (metrics.json, peak RSS in KiB of any process of the run)."""
    (work / f"{name}.yaml").write_text(spec)
    subprocess.run([sys.executable, "-m", "ftc.cli", "compile", f"{name}.yaml", "-t", "local", "-o", f"build-{name}"],
                   cwd=work, env=launch_env(), check=True, capture_output=True)
    out = work / "runs" / name
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, "bash", f"build-{name}/local/run.sh", "--output_dir", str(out)],
                          cwd=work, env=launch_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    peak = int(next(x for x in proc.stdout.splitlines() if x.startswith("PEAK_RSS_KIB")).split()[1])
    return json.loads((out / "metrics.json").read_text()), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each (interleaved)")
    opts = parser.parse_args()

    from tests.runtime.tiny_lm import make_lm_data, make_tiny_llama

    with tempfile.TemporaryDirectory(prefix="ftc-scale-out-") as tmp:
        work = Path(tmp)
        small = make_tiny_llama(work / "small", hidden_size=128, num_layers=4)
        large = make_tiny_llama(work / "large", hidden_size=1024, num_layers=8)
        data = make_lm_data(work / "data", n_train=800, n_val=8) / "text" / "train.jsonl"
        epoch = "num_train_epochs: 1"
        specs = {
            "1 process": SPEC.format(model=small, train=data, length=epoch, batch=8, processes=1),
            "2 processes (DDP)": SPEC.format(model=small, train=data, length=epoch, batch=8, processes=2),
            "DDP, 76M params": SPEC.format(model=large, train=data, length="max_steps: 10", batch=4, processes=2),
            "ZeRO-3, 76M params": SPEC.format(model=large, train=data, length="max_steps: 10", batch=4, processes=2) + ZERO3,
        }
        rates: dict[str, list[float]] = {n: [] for n in specs}
        peaks: dict[str, list[int]] = {n: [] for n in specs}
        for i in range(-1, opts.runs):  # -1: warm-up (file cache, .pyc, DeepSpeed's C++ helpers), not counted
            for n, (name, spec) in enumerate(specs.items()):
                metrics, peak = train(work, f"r{i + 1}_{n}", spec)
                if i >= 0:
                    rates[name].append(metrics["train_samples_per_second"])
                    peaks[name].append(peak)
            if i >= 0:
                print(f"run {i + 1}/{opts.runs}: " + ", ".join(f"{k} {rates[k][-1]:.0f}/s {peaks[k][-1] / 1024:.0f} MiB"
                                                               for k in specs), flush=True)

    one, two = (statistics.median(rates[k]) for k in ("1 process", "2 processes (DDP)"))
    pairs = [b / (2 * a) for a, b in zip(rates["1 process"], rates["2 processes (DDP)"])]
    print(f"\n{'':22} {'samples/s (median)':>19} {'min':>7} {'max':>7} {'peak RSS MiB (median)':>22}")
    for name in specs:
        print(f"{name:22} {statistics.median(rates[name]):19.1f} {min(rates[name]):7.1f} {max(rates[name]):7.1f} "
              f"{statistics.median(peaks[name]) / 1024:22.0f}")
    print(f"scaling efficiency, 2 processes / (2 x 1 process): {two / (2 * one):.3f} (medians); per interleaved run: "
          f"{min(pairs):.3f}-{max(pairs):.3f}")
    ddp, zero3 = (statistics.median(peaks[k]) for k in ("DDP, 76M params", "ZeRO-3, 76M params"))
    print(f"peak RSS per process, ZeRO-3 / DDP: {zero3 / ddp:.3f} (medians)")


if __name__ == "__main__":
    main()
