"""Training-loop overhead of the shared runtime: `ftc run` vs a minimal hand-written transformers Trainer script.

Both train the same tiny BERT classifier (built in code, tests/runtime/tiny.py) on the same generated
data with the same hyper-parameters (batch 16, AdamW, linear schedule, 10 warm-up steps, seed 0, no
evaluation or checkpoints during training), each as a fresh process, interleaved (ftc, script, ftc,
script, ...) so both see the same machine load. The measure is the Trainer's own
`train_samples_per_second` (samples / the time inside `trainer.train()`), which both report the same
way: ftc's metrics.json and the script's printed metrics. ftc's extras inside the training loop (the
throughput counter and progress-bar postfix, MLflow logging of every log record, checkpoint rotation,
log file) count; what ftc does around training (MLflow store, evaluation before and after, the MLflow
model, training_curves.png) does not, and shows in the whole-process wall time, reported beside it.

Usage: python bench/runtime_overhead.py [--runs N] [--rows N] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = """\
task: text_classification
name: overhead_bench
model: {model}
data:
  train_file_path: {train}
  validation_file_path: {validation}
  max_seq_length: 32
training:
  num_train_epochs: {epochs}
  per_device_train_batch_size: 16
  per_device_eval_batch_size: 64
  seed: 0
optimizer:
  optim: adamw_torch
  learning_rate: 0.002
  weight_decay: 0.0
  lr_scheduler_type: linear
  warmup_steps: 10
evaluation:
  evaluation_strategy: "no"
"""

# The hand-written baseline: what a person writes with transformers alone.
SCRIPT = """\
import json, sys
from datasets import Dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments, set_seed)

model_dir, train_file, out, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [json.loads(line) for line in open(train_file)]
labels = sorted({r["label"] for r in rows})
tokenizer = AutoTokenizer.from_pretrained(model_dir)
set_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(
    model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
    label2id={l: i for i, l in enumerate(labels)}, ignore_mismatched_sizes=True)
enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=32)
train = Dataset.from_dict({**enc, "labels": [labels.index(r["label"]) for r in rows]})
args = TrainingArguments(output_dir=out, num_train_epochs=epochs, per_device_train_batch_size=16, learning_rate=0.002,
                         weight_decay=0.0, lr_scheduler_type="linear", warmup_steps=10, optim="adamw_torch", seed=0,
                         eval_strategy="no", save_strategy="no", logging_strategy="epoch", report_to="none",
                         use_cpu=True)
result = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer),
                 processing_class=tokenizer).train()
print("METRICS " + json.dumps(result.metrics))
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of each (interleaved)")
    parser.add_argument("--rows", type=int, default=2048, help="training rows")
    parser.add_argument("--epochs", type=int, default=2)
    opts = parser.parse_args()

    from tests.runtime.tiny import make_classification_data, make_tiny_classifier

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="ftc-overhead-") as tmp:
        work = Path(tmp)
        model = make_tiny_classifier(work / "model", hidden_size=128, num_layers=4)
        train, validation = make_classification_data(work / "data", n_train=opts.rows, n_val=60, seed=0)
        spec = work / "spec.yaml"
        spec.write_text(SPEC.format(model=model, train=train, validation=validation, epochs=opts.epochs))
        script = work / "baseline.py"
        script.write_text(textwrap.dedent(SCRIPT))
        commands = {
            "ftc run": lambda i: [sys.executable, "-m", "ftc.cli", "run", str(spec), "--output", str(work / f"ftc{i}")],
            "hand-written Trainer": lambda i: [sys.executable, str(script), str(model), str(train), str(work / f"hf{i}"),
                                               str(opts.epochs)],
        }
        rates: dict[str, list[float]] = {name: [] for name in commands}
        walls: dict[str, list[float]] = {name: [] for name in commands}
        for i in range(-1, opts.runs):  # -1: warm-up (file cache, .pyc), not counted
            for name, cmd in commands.items():
                wall, stdout = run(cmd(i), env)
                if name == "ftc run":
                    metrics = json.loads((work / f"ftc{i}" / "metrics.json").read_text())
                else:
                    metrics = json.loads(next(x for x in stdout.splitlines() if x.startswith("METRICS "))[8:])
                if i >= 0:
                    rates[name].append(metrics["train_samples_per_second"])
                    walls[name].append(wall)
            if i >= 0:
                print(f"run {i + 1}/{opts.runs}: " + ", ".join(f"{n} {rates[n][-1]:.0f} samples/s" for n in commands),
                      flush=True)

    ftc, hf = (statistics.median(rates[n]) for n in commands)
    pairs = [a / b for a, b in zip(rates["ftc run"], rates["hand-written Trainer"])]
    steps = opts.epochs * -(-opts.rows // 16)
    print(f"\n{opts.rows} rows x {opts.epochs} epochs = {steps} steps of 16; BERT hidden 128, 4 layers; "
          f"{opts.runs} runs each, interleaved; torch threads: default ({os.cpu_count()} cores)")
    print(f"{'':22} {'samples/s (median)':>19} {'min':>7} {'max':>7} {'process wall s (median)':>24}")
    for name in commands:
        print(f"{name:22} {statistics.median(rates[name]):19.1f} {min(rates[name]):7.1f} {max(rates[name]):7.1f} "
              f"{statistics.median(walls[name]):24.2f}")
    print(f"ratio ftc / hand-written, samples/s: {ftc / hf:.3f} (medians); per interleaved pair: median "
          f"{statistics.median(pairs):.3f}, range {min(pairs):.3f}-{max(pairs):.3f}")


if __name__ == "__main__":
    main()
