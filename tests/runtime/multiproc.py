"""Runs of the local target's run.sh in several processes (torchrun, gloo on CPU), shared by the DDP,
DeepSpeed, FSDP and resume tests: the launcher's environment, compile + run, and the tiny Llama
project with a recomputation of its validation loss from a saved model.

DeepSpeed builds C++ extensions on first use (deepspeed_shm_comm at the first deepspeed.initialize,
cpu_adam for offload_optimizer: about 50 s each on 2 cores). They are cached in TORCH_EXTENSIONS_DIR,
which these runs default to `~/.cache/ftc/torch_extensions`, so a machine (or a CI cache of that
folder) pays the builds once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.runtime.conftest import REPO

EXTENSIONS_DIR = Path("~/.cache/ftc/torch_extensions").expanduser()

# The tiny Llama of tiny_lm.py on text data, one sample per padded row (labels: every real token);
# 64 validation rows are one eval batch of 32 per rank.
LM_SPEC = """\
task: causal_lm
model: ./models/llama
data:
  train_file_path: data/lm/text/train.jsonl
  validation_file_path: data/lm/text/validation.jsonl
  max_seq_length: 128
  batching_strategy: padding
training:
  max_steps: 40
  per_device_train_batch_size: 8
  per_device_eval_batch_size: 32
  seed: 0
optimizer:
  optim: adamw_torch
  learning_rate: 0.002
  warmup_steps: 5
evaluation:
  evaluation_strategy: 'no'
checkpointing:
  output_dir: out
  save_total_limit: 1
  save_as_mlflow_model: false
resources:
  processes_per_node: 2
  device: cpu
"""


def launch_env() -> dict[str, str]:
    """This interpreter and checkout, offline, one thread per process, no inherited launcher variables."""
    env = {
        **os.environ,
        "FTC_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR") or str(EXTENSIONS_DIR),
    }
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    Path(env["TORCH_EXTENSIONS_DIR"]).mkdir(parents=True, exist_ok=True)
    return env


def compile_local(project: Path, spec: str, name: str, processes: int) -> str:
    """Write `spec` as `<name>.yaml` and compile it for the local target; returns its run.sh, relative to `project`."""
    (project / f"{name}.yaml").write_text(spec)
    compiled = subprocess.run(
        [sys.executable, "-m", "ftc.cli", "compile", f"{name}.yaml", "-t", "local", "-o", f"build-{name}"],
        cwd=project, env=launch_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    script = (project / f"build-{name}" / "local" / "run.sh").read_text()
    assert ("--nproc_per_node 2" in script) == (processes == 2)
    return f"build-{name}/local/run.sh"


def compile_and_run(
    project: Path, spec: str, name: str, processes: int, *args: str, out: Path | None = None
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Write `spec` as `<name>.yaml`, compile it for the local target and run its run.sh (torchrun for
    several processes, plain python for one) with `args`; every rank must exit 0. Returns
    (output folder, the run's completed process)."""
    compile_local(project, spec, name, processes)
    out = out or project / "runs" / name
    result = subprocess.run(
        ["bash", f"build-{name}/local/run.sh", "--output_dir", str(out), *args],
        cwd=project, env=launch_env(), capture_output=True, text=True, timeout=900, check=False,
    )
    # torchrun exits 0 only when every rank did; a rank aborting at exit (no destroy_process_group) shows here
    assert result.returncode == 0, result.stderr[-5000:]
    for sign in ("Traceback", "terminate called", "ChildFailedError"):
        assert sign not in result.stderr, result.stderr[-5000:]
    return out, result


def make_lm_project(project: Path) -> None:
    """models/llama (the tiny Llama) and data/lm/text (400 training, 64 validation rows) in `project`."""
    from tests.runtime.tiny_lm import make_lm_data, make_tiny_llama

    make_tiny_llama(project / "models" / "llama")
    make_lm_data(project / "data" / "lm", n_train=400, n_val=64)


def validation_rows(project: Path) -> list[dict[str, str]]:
    path = project / "data" / "lm" / "text" / "validation.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def lm_loss(folder: Path, rows: list[dict[str, str]], batch_size: int = 32, base: Path | None = None) -> float:
    """The validation loss of the model saved in `folder` (an adapter over `base`), reloaded with plain
    transformers (and peft): the runtime's padded text samples (BOS, tokens, EOS; labels -100 on the
    padding), mean token loss per batch of `batch_size` rows, averaged over rows as the Trainer does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    if base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(folder)).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    samples = [ids + [tok.eos_token_id] for ids in tok([r["text"] for r in rows])["input_ids"]]
    losses, weights = [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.tensor([s + [tok.eos_token_id] * (width - len(s)) for s in chunk])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk])
        labels = ids.masked_fill(mask == 0, -100)
        with torch.no_grad():
            losses.append(model(input_ids=ids, attention_mask=mask, labels=labels).loss.item())
        weights.append(len(chunk))
    return sum(loss * w for loss, w in zip(losses, weights)) / sum(weights)


def losses(out: Path) -> dict[int, float]:
    """Training loss per step, from the run's train_log_history.json (tracking.save_metrics)."""
    history = json.loads((out / "train_log_history.json").read_text())
    return {h["step"]: h["loss"] for h in history if "loss" in h}
