"""FSDP on CPU: two processes (torchrun, gloo) through the local target's run.sh, on the tiny Llama.

FSDP2 (FULL_SHARD, SHARD_GRAD_OP) runs in CPU processes: accelerate turns its FSDP plugin on for
accelerator devices only, and the runtime lets it take CPU processes too (ftc/runtime/fsdp.py).
What cannot run on CPU is refused before loading, with the reason: NO_SHARD and HYBRID_SHARD
(FSDP1, GPUs only in accelerate) and FULL_STATE_DICT checkpoints; the GPU check covers those.

FSDP computes what DDP computes (the shards are all-gathered for the forward and backward passes,
gradients reduce-scattered), so the proof that it really ran sharded is twofold: the per-step
losses equal a plain DDP run's, and every checkpoint holds one torch.distributed.checkpoint shard
per rank. The final model is gathered into one plain transformers model (or peft adapter) that
reloads and scores the runtime's last evaluation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.multiproc import (
    LM_SPEC,
    compile_and_run,
    launch_env,
    lm_loss,
    losses,
    make_lm_project,
    validation_rows,
)

pytestmark = pytest.mark.slow

# 40 steps, a loss at every step, evaluation and a checkpoint every 20 steps.
FSDP_SPEC = LM_SPEC.replace(
    "  evaluation_strategy: 'no'\n", "  evaluation_strategy: steps\n  eval_steps: 20\n"
) + "tracking:\n  logging_strategy: steps\n  logging_steps: 1\n  save_metrics: true\n"
FSDP = "fsdp:\n  enable_fsdp: true\n  fsdp_activation_checkpointing: false\n"


def _shards(checkpoint: Path) -> list[str]:
    return sorted(p.name for p in (checkpoint / "pytorch_model_fsdp_0").glob("*.distcp"))


def test_full_shard_matches_ddp_and_saves_one_plain_model(project: Path) -> None:
    make_lm_project(project)
    ddp, _ = compile_and_run(project, FSDP_SPEC, "ddp", 2)
    fsdp, result = compile_and_run(project, FSDP_SPEC + FSDP + "  sharding_strategy: FULL_SHARD\n", "fsdp", 2)

    one, two = losses(ddp), losses(fsdp)
    assert sorted(one) == sorted(two) == list(range(1, 41))
    assert max(abs(one[s + 1] - one[s]) / one[s] for s in range(1, 40)) > 1e-2  # other batches: far apart
    for step in one:  # observed: 2e-7 relative
        assert two[step] == pytest.approx(one[step], rel=1e-5), (step, one[step], two[step])

    folder = fsdp / "pytorch_model_folder"
    checkpoint = folder / "checkpoint-40"
    assert _shards(checkpoint) == ["__0_0.distcp", "__1_0.distcp"]  # one shard per rank: FSDP really ran
    assert (checkpoint / "optimizer_0" / ".metadata").is_file()
    assert not (ddp / "pytorch_model_folder" / "checkpoint-40" / "pytorch_model_fsdp_0").exists()

    metrics = json.loads((fsdp / "metrics.json").read_text())
    assert metrics["eval_loss"] < metrics["initial_eval_loss"] - 1.0, metrics
    assert json.loads((folder / "ftc_model_info.json").read_text())["saved"] == "model"
    reloaded = lm_loss(folder, validation_rows(project))  # the gathered model, with plain transformers
    assert reloaded == pytest.approx(metrics["eval_loss"], rel=1e-3), (reloaded, metrics["eval_loss"])
    assert result.stderr.count("validation after training") == 1  # rank 0 reports, alone


def test_shard_grad_op_lora_saves_the_adapter(project: Path) -> None:
    make_lm_project(project)
    lora = "lora:\n  apply_lora: true\n  target_modules: [q_proj, v_proj]\n  merge_lora_weights: false\n"
    spec = FSDP_SPEC.replace("learning_rate: 0.002", "learning_rate: 0.01") + FSDP + "  sharding_strategy: SHARD_GRAD_OP\n" + lora
    out, _ = compile_and_run(project, spec, "lora", 2)

    folder = out / "pytorch_model_folder"
    assert _shards(folder / "checkpoint-40") == ["__0_0.distcp", "__1_0.distcp"]
    assert json.loads((folder / "ftc_model_info.json").read_text())["saved"] == "adapter"
    assert (folder / "adapter_config.json").is_file() and not (folder / "model.safetensors").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_loss"] < metrics["initial_eval_loss"] - 0.1, metrics
    reloaded = lm_loss(folder, validation_rows(project), base=project / "models" / "llama")
    assert reloaded == pytest.approx(metrics["eval_loss"], rel=1e-3), (reloaded, metrics["eval_loss"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("  sharding_strategy: NO_SHARD\n", "NO_SHARD is FSDP1, which accelerate runs on GPUs only"),
        ("  sharding_strategy: HYBRID_SHARD\n", "HYBRID_SHARD is FSDP1, which accelerate runs on GPUs only"),
        ("  checkpoint_type: FULL_STATE_DICT\n", "FULL_STATE_DICT fails in CPU processes"),
        (  # never silently dropped: group sizes other than the nodes are refused with the reason (lint FTC146)
            "  sharding_strategy: HYBRID_SHARD\n  hsdp: true\n  sharding_group_size: 2\n",
            "fsdp.hsdp: sharding_group_size 2 x replica_group_size 1 = 2, but the job has 1 processes",
        ),
    ],
)
def test_what_cannot_run_on_cpu_is_refused_before_loading(project: Path, settings: str, message: str) -> None:
    make_lm_project(project)
    ignore = (
        "lint:\n  ignore:\n    FTC145: the runtime's own refusal is under test (lint refuses it first)\n"
        "    FTC146: the same\n"
    )
    (project / "spec.yaml").write_text(FSDP_SPEC.replace("processes_per_node: 2", "processes_per_node: 1") + FSDP + settings + ignore)
    subprocess.run([sys.executable, "-m", "ftc.cli", "compile", "spec.yaml", "-t", "local", "-o", "build"],
                   cwd=project, env=launch_env(), check=True, capture_output=True)
    result = subprocess.run(["bash", "build/local/run.sh", "--output_dir", str(project / "out")],
                            cwd=project, env=launch_env(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Loading weights" not in result.stderr  # refused before the model was loaded
