"""Ray Train over two Ray nodes: a head and a worker node in one loopback-only network namespace
(tests/backends/ray_cluster.py, `two_node_ray_cluster`), one CPU each, so the job's two one-CPU workers
(resources.nodes 2, targets.ray.placement_strategy SPREAD) can only run one on each node.

Both nodes are on this machine, so any absolute folder is storage both nodes see: the output folder
and targets.ray.storage_path (Ray Train's checkpoints) are such folders here, as a shared file system
(NFS, Lustre) or a URI would be on a real cluster.

- The uninterrupted job: the ranks recorded by the runtime (metrics.json "ranks") name the cluster's two
  Ray node ids; Ray Train's last checkpoint in storage_path holds both ranks' parts; the per-step training
  losses equal one process's with the same effective batch (the local target, batch 16 against 2 x 8),
  to the tolerance of tests/runtime/test_ddp.py (whose docstring says why the batches are the same rows).
- A GPU job's check (FTC_CHECK=rendezvous, each node declaring one GPU): each worker gets its own node's GPU.
- A Ray Train worker killed on the worker node (SIGKILL, after Ray Train recorded a checkpoint): with
  max_failures 1 the worker group restarts from that checkpoint, the job ends SUCCEEDED at the planned
  step count, and every step's loss equals the uninterrupted job's to the tolerance of the resume tests
  (tests/runtime/test_resume_distributed.py). The steps redone (logged twice in ftc_runtime.log) are
  exactly those after the restored checkpoint up to where the first attempt stopped; they and the time
  to recover are measured (record_property, and printed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.backends.ray_cluster import SECRET_NAME, RayCluster, two_node_ray_cluster  # noqa: F401  (the cluster fixture)
from tests.runtime.multiproc import compile_and_run, losses

pytestmark = [pytest.mark.ray, pytest.mark.slow]

PYTHON = sys.executable
STEPS_PER_EPOCH = 15  # 240 rows / (batch 8 x 2 workers)
EPOCHS = 8  # 120 steps: the kill comes a second or two after the first checkpoint (15), long before the end
STEPS = STEPS_PER_EPOCH * EPOCHS

# The tiny classifier without dropout (its random masks would differ between the runs), a loss at every step.
SPEC = """\
task: text_classification
name: ray-two-nodes
model: {model}
data:
  train_file_path: data/train.jsonl
  validation_file_path: data/validation.jsonl
  max_seq_length: 32
training:
  num_train_epochs: {epochs}
  per_device_train_batch_size: {batch}
  per_device_eval_batch_size: 64
  seed: 0
optimizer:
  optim: adamw_torch
  learning_rate: 0.002
  warmup_steps: 10
evaluation:
  metric_for_best_model: accuracy
tracking:
  logging_strategy: steps
  logging_steps: 1
  save_metrics: true
checkpointing:
  output_dir: {output_dir}
  save_total_limit: 1
  save_as_mlflow_model: false
"""
RAY_PART = """\
env:
  vars:
    TOKENIZERS_PARALLELISM: "false"
    HF_HUB_OFFLINE: "1"
  secrets: [{secret}]
resources:
  nodes: 2
  processes_per_node: 1
  device: cpu
targets:
  ray:
    python: {python}
    placement_strategy: SPREAD
    storage_path: {storage}
    max_failures: {max_failures}
"""
LOCAL_PART = """\
resources:
  processes_per_node: 1
  device: cpu
"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny classifier with dropout 0, and 240 training / 60 validation rows."""
    from tests.runtime.tiny import make_dropout_free_classification

    return make_dropout_free_classification(tmp_path_factory.mktemp("two-node-assets"))


def spec_text(assets: tuple[Path, Path], output_dir: str, batch: int) -> str:
    return SPEC.format(model=json.dumps(str(assets[0])), epochs=EPOCHS, batch=batch, output_dir=output_dir)


def make_project(root: Path, assets: tuple[Path, Path], max_failures: int = 0) -> Path:
    """A spec folder with its data (it travels with the job); outputs in root/out, Ray Train's storage in root/shared."""
    shutil.copytree(assets[1], root / "data")
    spec = root / "spec.yaml"
    ray = RAY_PART.format(
        secret=SECRET_NAME, python=json.dumps(PYTHON), storage=json.dumps(str(root / "shared")), max_failures=max_failures
    )
    spec.write_text(spec_text(assets, json.dumps(str(root / "out")), batch=8) + ray)
    return spec


def submit_command(cluster: RayCluster, spec: Path) -> list[str]:
    return [PYTHON, "-m", "ftc.cli", "submit", str(spec), "--target", "ray", "--address", cluster.dashboard]


def recorded_checkpoints(storage: Path) -> list[dict[str, Any]]:
    """The checkpoints Ray Train's controller has recorded (its snapshot in the run folder)."""
    found = []
    for snapshot in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            found += json.loads(snapshot.read_text()).get("checkpoint_results", [])
        except ValueError:  # being written
            pass
    return found


def check_finished(root: Path, log: str, cluster: RayCluster) -> dict[str, Any]:
    """What every two-node job shows: SUCCEEDED at STEPS, a rank on each Ray node, the last checkpoint in storage_path."""
    assert "SUCCEEDED" in log, log[-8000:]
    assert f"{STEPS} step(s) ({STEPS_PER_EPOCH} per epoch), batch 8 x 2 process(es)" in log, log[-5000:]
    out = root / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_loss"] < metrics["initial_eval_loss"], metrics  # it learned
    nodes = {node["node_id"] for node in cluster.nodes()}
    assert len(nodes) == 2, nodes
    ranks = metrics["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1], ranks
    assert {r["node"] for r in ranks} == nodes, (ranks, nodes)  # one rank on each Ray node
    assert [r["local_rank"] for r in ranks] == [0, 0], ranks  # alone on its node
    recorded = recorded_checkpoints(root / "shared")
    assert recorded and recorded[-1]["metrics"]["step"] == STEPS, recorded
    (run,) = (root / "shared").iterdir()
    checkpoint = run / recorded[-1]["checkpoint_dir_name"]
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == STEPS
    assert (checkpoint / "model.safetensors").exists()
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}  # both ranks' parts
    return metrics


@pytest.fixture(scope="module")
def uninterrupted(two_node_ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory, assets: tuple[Path, Path]) -> Path:
    """One two-node job submitted with `ftc submit` and trained to the end; its project folder."""
    root = tmp_path_factory.mktemp("two-nodes-uninterrupted")
    spec = make_project(root, assets)
    result = two_node_ray_cluster.run(submit_command(two_node_ray_cluster, spec), cwd=root, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-8000:]
    check_finished(root, log, two_node_ray_cluster)
    return root


def test_workers_spread_over_two_nodes_train_as_one_process(uninterrupted: Path, tmp_path: Path, assets: tuple[Path, Path]) -> None:
    project = tmp_path / "single"
    shutil.copytree(assets[1], project / "data")
    single, _ = compile_and_run(project, spec_text(assets, "out", batch=16) + LOCAL_PART, "single", 1)
    one, two = losses(single), losses(uninterrupted / "out")
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    # different batches would be far apart: neighbouring steps differ by much more than the tolerance
    assert max(abs(one[s + 1] - one[s]) / one[s] for s in range(1, STEPS)) > 1e-2
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), (step, one[step], two[step])


CHECK_SPEC = """\
task: text_classification
name: ray-two-nodes-check
model: /models/tiny
data: {{train_file_path: data/train.jsonl, validation_file_path: data/validation.jsonl}}
checkpointing: {{output_dir: {output_dir}}}
env:
  vars: {{FTC_CHECK: rendezvous}}
  secrets: [{secret}]
resources: {{nodes: 2, processes_per_node: 1, device: auto, cpus_per_process: 1}}
targets: {{ray: {{python: {python}, placement_strategy: SPREAD}}}}
"""
CHECK_LINE = re.compile(r"ftc check rendezvous: rank (\d+)/2 local_rank (\d+) node (\d+) ray_gpu_ids=(\S*) CUDA_VISIBLE_DEVICES=(\S*)")


def test_gpu_workers_get_the_gpu_of_their_node(two_node_ray_cluster: RayCluster, tmp_path: Path) -> None:
    """device auto, 2 nodes x 1 process (FTC_CHECK=rendezvous: an all-reduce, no data, no model): each node
    declares one GPU, so each worker is alone on its node (node rank 0 and 1) with that node's GPU 0."""
    (tmp_path / "data").mkdir()
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        CHECK_SPEC.format(output_dir=json.dumps(str(tmp_path / "out")), secret=SECRET_NAME, python=json.dumps(PYTHON))
    )
    result = two_node_ray_cluster.run(submit_command(two_node_ray_cluster, spec), cwd=tmp_path, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-8000:]
    seen = sorted({tuple(m.groups()) for m in CHECK_LINE.finditer(log)})  # a line may be shown twice
    assert seen == [("0", "0", "0", "0", "0"), ("1", "0", "1", "0", "0")], log[-8000:]


def _kill_a_worker_on_the_worker_node(cluster: RayCluster, root: Path, submit: subprocess.Popen[bytes], log_path: Path) -> float:
    """Once Ray Train has recorded a checkpoint, SIGKILL the Ray Train worker of node 1; returns when (time.time())."""
    deadline = time.monotonic() + 300
    while not recorded_checkpoints(root / "shared"):
        assert submit.poll() is None, log_path.read_text()[-8000:]
        assert time.monotonic() < deadline, "no checkpoint recorded in 300 s"
        time.sleep(0.05)
    workers = {cluster.node_of(pid): pid for pid in cluster.processes("ray::RayTrainWorker")}
    assert sorted(workers, key=str) == [0, 1], workers  # one worker process on each node
    killed_at = time.time()
    os.kill(workers[1], 9)  # a real death: SIGKILL, no chance to clean up
    return killed_at


def _step_lines(log: str) -> list[tuple[float, int, int]]:
    """(time, step, attempt) of every training loss in ftc_runtime.log, in order; attempt 1 is the one
    after the runtime's "resuming from" line (a redone step appears in both)."""
    found, attempt = [], 0
    for line in log.splitlines():
        stamp, _, rest = line.partition(" INFO ftc.runtime.train: step ")
        number, _, record = rest.partition(": ")
        if " INFO ftc.runtime: resuming from " in line:
            attempt += 1
        elif rest and '"loss"' in record:
            found.append((datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp(), int(number), attempt))
    return found


def _recovery(out: Path, killed_at: float, restored: int) -> dict[str, float]:
    """Steps redone; seconds from the kill to the first step after the checkpoint, and to the last step of the first attempt."""
    lines = _step_lines((out / "ftc_runtime.log").read_text())
    assert {attempt for _, _, attempt in lines} == {0, 1}, lines  # one restart
    first = [step for _, step, attempt in lines if attempt == 0]
    second = {step: t for t, step, attempt in lines if attempt == 1}
    assert first == list(range(1, len(first) + 1)) and first[-1] >= restored, (first, restored)
    assert sorted(second) == list(range(restored + 1, STEPS + 1)), second  # every planned step after the checkpoint
    redone = sorted(set(first) & set(second))
    assert redone == list(range(restored + 1, first[-1] + 1)), (redone, restored)
    return {
        "steps_redone": len(redone),
        "seconds_to_first_step": second[restored + 1] - killed_at,
        "seconds_to_catch_up": second[max(first[-1], restored + 1)] - killed_at,
    }


def test_killed_worker_on_the_worker_node_resumes_from_the_last_checkpoint(
    two_node_ray_cluster: RayCluster, tmp_path: Path, assets: tuple[Path, Path], uninterrupted: Path,
    record_property: Any,
) -> None:
    cluster = two_node_ray_cluster
    root = tmp_path / "killed"
    spec = make_project(root, assets, max_failures=1)
    log_path = tmp_path / "submit.log"
    with log_path.open("wb") as log_file:
        submit = cluster.popen(submit_command(cluster, spec), cwd=root, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            killed_at = _kill_a_worker_on_the_worker_node(cluster, root, submit, log_path)
            code = submit.wait(timeout=600)
        finally:
            if submit.poll() is None:
                submit.kill()
    log = log_path.read_text()
    assert code == 0, log[-8000:]
    check_finished(root, log, cluster)
    restarted = [line for line in log.splitlines() if "resuming from Ray Train's last checkpoint (step" in line]
    assert restarted, log[-8000:]
    restored = int(restarted[0].split("(step ")[1].split(",")[0])
    assert 0 < restored < STEPS and restored % STEPS_PER_EPOCH == 0, restored  # a checkpoint of an epoch's end
    assert f"resuming from {root / 'out' / 'pytorch_model_folder'}/checkpoint-{restored}" in log
    # Resumed with its optimizer, scheduler, RNG and data order: the curve of the job never interrupted.
    resumed, reference = losses(root / "out"), losses(uninterrupted / "out")
    assert sorted(resumed) == sorted(reference) == list(range(1, STEPS + 1))
    for step in reference:
        assert resumed[step] == pytest.approx(reference[step], rel=1e-4), (step, resumed[step], reference[step])
    recovery = _recovery(root / "out", killed_at, restored)
    for name, value in {"restored_step": restored, **recovery}.items():
        record_property(name, value)
    print(f"\nray worker killed on the worker node: restored step {restored}, {recovery}")
