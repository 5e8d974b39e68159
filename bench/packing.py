"""causal_lm throughput: real (non-pad) training tokens/s with batching_strategy packing vs padding.

Both train the same tiny Llama (built in code, tests/runtime/tiny_lm.py: hidden 128, 4 layers) for
one epoch on the same generated chats with long-tailed lengths (most 35-60 tokens, one in seven
80-250: small talk before the plan; real chat data is long-tailed too), context_length 256, 8 rows per batch,
through `ftc run` as fresh processes, interleaved (packing, padding, packing, ...) so both see the
same machine load. Packing puts several chats into each row of 256 (position_ids restart with
every chat, no cross-chat attention); padding pads each batch of 8 chats to its longest. The
measure is the real tokens of the epoch (every token of every chat, counted here with the task's
own encoder) divided by the Trainer's train_runtime; evaluation and saving are not timed.

Usage: python bench/packing.py [--runs N] [--rows N] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONTEXT, BATCH = 256, 8
SPEC = """\
task: causal_lm
name: packing_bench
model: {model}
data:
  train_file_path: {train}
  validation_file_path: {validation}
  context_length: {context}
  batching_strategy: {strategy}
training:
  num_train_epochs: 1
  per_device_train_batch_size: {batch}
  per_device_eval_batch_size: 16
  seed: 0
optimizer:
  learning_rate: 0.001
  warmup_steps: 10
evaluation:
  evaluation_strategy: "no"
checkpointing:
  save_model: false
  save_as_mlflow_model: false
resources:
  cpus_per_process: {threads}
"""


def real_tokens(model: Path, train: Path) -> int:
    """Tokens of all training chats, cut at the context length, as the causal_lm task encodes them."""
    from transformers import AutoTokenizer

    from ftc.runtime.tasks.causal_lm import encode_chat

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    return sum(min(CONTEXT, len(encode_chat(tokenizer, r["messages"], tagged=False)[0])) for r in rows)


def train_runtime(spec: Path, out: Path, env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-m", "ftc.cli", "run", str(spec), "--output", str(out)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {spec}\n{proc.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each (interleaved)")
    parser.add_argument("--rows", type=int, default=1200, help="training chats")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (1: steadiest on a shared machine)")
    opts = parser.parse_args()

    from tests.runtime.tiny import write_jsonl
    from tests.runtime.tiny_lm import chat_rows, make_tiny_llama

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="ftc-packing-") as tmp:
        work = Path(tmp)
        model = make_tiny_llama(work / "model", hidden_size=128, num_layers=4)
        train = write_jsonl(work / "train.jsonl", chat_rows(opts.rows, seed=0, long_tail=True))
        validation = write_jsonl(work / "validation.jsonl", chat_rows(16, seed=1))
        tokens = real_tokens(model, train)
        specs = {}
        for strategy in ("packing", "padding"):
            specs[strategy] = work / f"{strategy}.yaml"
            specs[strategy].write_text(SPEC.format(model=model, train=train, validation=validation, context=CONTEXT,
                                                   strategy=strategy, batch=BATCH, threads=opts.threads))
        rates: dict[str, list[float]] = {name: [] for name in specs}
        steps: dict[str, int] = {}
        for i in range(-1, opts.runs):  # -1: warm-up (file cache, .pyc), not counted
            for name, spec in specs.items():
                metrics = train_runtime(spec, work / f"{name}{i}", env)
                steps[name] = round(metrics["train_steps_per_second"] * metrics["train_runtime"])
                if i >= 0:
                    rates[name].append(tokens / metrics["train_runtime"])
            if i >= 0:
                print(f"run {i + 1}/{opts.runs}: " + ", ".join(f"{n} {rates[n][-1]:.0f} tokens/s" for n in specs),
                      flush=True)

    packing, padding = (statistics.median(rates[n]) for n in specs)
    pairs = [a / b for a, b in zip(rates["packing"], rates["padding"])]
    print(f"\n{opts.rows} chats, {tokens} real tokens, 1 epoch, context {CONTEXT}, {BATCH} rows per batch; Llama hidden "
          f"128, 4 layers; {opts.runs} runs each, interleaved; torch threads {opts.threads} ({os.cpu_count()} cores)")
    print(f"{'':10} {'steps':>6} {'real tokens/s (median)':>23} {'min':>8} {'max':>8}")
    for name in specs:
        print(f"{name:10} {steps[name]:6d} {statistics.median(rates[name]):23.0f} {min(rates[name]):8.0f} "
              f"{max(rates[name]):8.0f}")
    print(f"ratio packing / padding, real tokens/s: {packing / padding:.2f} (medians); per interleaved pair: median "
          f"{statistics.median(pairs):.2f}, range {min(pairs):.2f}-{max(pairs):.2f}")


if __name__ == "__main__":
    main()
