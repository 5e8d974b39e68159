"""The slurm target on two nodes (n1, n2: two slurmd daemons on this machine, tests/backends/slurm_cluster.py):
one srun task per node runs torchrun, the c10d rendezvous is on the first node, and the two ranks really
all-reduce (the loss curve of one process with the same global batch, as tests/runtime/test_ddp.py shows
for one node); the preemption signal requeues the job, which resumes on both nodes from its checkpoint; a
lost node ends the job FAILED (srun --kill-on-bad-exit, no hang) and a resubmit with
`--resume_from_checkpoint true` continues from the newest checkpoint.

Each job trains the tiny classifier (dropout 0) for 2 epochs of 15 steps of 16 rows: 1 process x 16 rows
for the reference, 2 nodes x 1 process x 8 rows otherwise. Checkpoints at each epoch (step 15, 30).
What each fault cost (steps redone; seconds from the signal or kill to the job running again, or ended)
is kept in the tests' user_properties: `-o junit_family=legacy --junitxml=FILE` writes them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from ftc.compiler.build import compile_spec
from tests.backends.slurm_cluster import FINAL_STATES, SlurmCluster, slurm_two_nodes  # noqa: F401  (the cluster fixture)
from tests.conftest import MINIMAL

VENV = Path(sys.prefix)
STEPS = 30  # 2 epochs x 240 rows / 16 rows per step
EPOCH_STEPS = 15
SPEC = """\
task: text_classification
model: ./models/tiny
data: {{train_file_path: data/train.jsonl, validation_file_path: data/validation.jsonl, max_seq_length: 32}}
training: {{num_train_epochs: 2, per_device_train_batch_size: {batch}, per_device_eval_batch_size: 64, seed: 0}}
optimizer: {{optim: adamw_torch, learning_rate: 0.002, warmup_steps: 10}}
evaluation: {{metric_for_best_model: accuracy}}
checkpointing: {{output_dir: out, save_total_limit: -1}}
tracking: {{logging_strategy: steps, logging_steps: 1, save_metrics: true}}
env: {{vars: {{TOKENIZERS_PARALLELISM: "false", OMP_NUM_THREADS: "1"}}}}
resources: {{nodes: {nodes}, processes_per_node: 1, device: cpu}}
targets: {{slurm: {{venv: {venv}, requeue: {requeue}}}}}
"""


# A NodeName that no resolver knows, as on the test cluster (n1, n2): the rendezvous must use its NodeAddr.
FAKE_SCONTROL = """\
#!/usr/bin/env bash
case "$1 $2" in
    "show hostnames") echo n1; echo n2 ;;
    "show node") echo "NodeName=$4 Arch=x86_64 CoresPerSocket=1 NodeAddr=10.1.2.3 NodeHostName=h1 Version=22.05.8" ;;
esac
"""


def test_rendezvous_at_the_first_nodes_address(write_spec: Callable[..., Path], tmp_path: Path) -> None:
    """torchrun meets at the first node's NodeAddr (SLURM's address for it), not its name; one srun task per node."""
    spec = MINIMAL + yaml.safe_dump({"resources": {"nodes": 2, "device": "cpu"}})
    (folder,) = compile_spec(write_spec(spec), ["slurm"], tmp_path / "build")
    tools = tmp_path / "tools"
    tools.mkdir()
    for name, body in {"scontrol": FAKE_SCONTROL, "srun": '#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n'}.items():
        (tools / name).write_text(body)
        (tools / name).chmod(0o755)
    env = {
        **os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "FTC_BUILD_DIR": str(folder),
        "SLURM_JOB_ID": "1234", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "n[1-2]",
    }
    result = subprocess.run(["bash", str(folder / "job.sbatch")], env=env, capture_output=True, text=True, check=True)
    args = result.stdout.splitlines()
    assert "--rdzv_endpoint=10.1.2.3:30734" in args, args  # 29500 + 1234 % 2000
    assert {"--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--nnodes=2"} <= set(args), args
    assert "job.sbatch: 2 node(s) n1 n2; c10d rendezvous on n1 at 10.1.2.3:30734" in result.stderr


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny classifier with dropout 0 (its masks would differ between the runs) and 240 + 60 rows."""
    from tests.runtime.tiny import make_dropout_free_classification

    return make_dropout_free_classification(tmp_path_factory.mktemp("two-node-assets"))


@pytest.fixture(scope="module")
def job_env() -> Iterator[None]:
    """What the jobs inherit through sbatch (--export=ALL): offline hub, no build folder or python override."""
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("FTC_BUILD_DIR", "FTC_PYTHON", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        patch.delenv(var, raising=False)
    yield
    patch.undo()


def make_build(root: Path, assets: tuple[Path, Path], nodes: int, requeue: bool = False) -> Path:
    """A spec folder in `root` (model linked, data copied), compiled for slurm; returns the build folder."""
    model, data = assets
    (root / "models").mkdir(parents=True)
    (root / "models" / "tiny").symlink_to(model, target_is_directory=True)
    (root / "data").mkdir()
    for src in data.iterdir():
        (root / "data" / src.name).write_bytes(src.read_bytes())
    batch = 16 // nodes
    spec = root / "spec.yaml"
    spec.write_text(SPEC.format(batch=batch, nodes=nodes, venv=json.dumps(str(VENV)), requeue=str(requeue).lower()))
    (folder,) = compile_spec(spec, ["slurm"], root / "build")
    return folder


def submit(cluster: SlurmCluster, build: Path, *args: str) -> str:
    """sbatch the build's job.sbatch from the spec's folder; the job id."""
    return cluster.run(["sbatch", "--parsable", str(build / "job.sbatch"), *args], cwd=build.parents[1]).stdout.strip()


def log_of(job: dict[str, str]) -> str:
    out = Path(job["StdOut"])
    return out.read_text(errors="replace") if out.exists() else f"(no output file {out})"


def losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "train_log_history.json").read_text())
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def last_logged_step(out: Path) -> int:
    """The last step whose training loss the run's log file holds (rank 0 logs every step)."""
    text = (out / "ftc_runtime.log").read_text()
    return max(int(step) for step in re.findall(r"step (\d+): \{\"loss\"", text))


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (out / "pytorch_model_folder").glob("checkpoint-*"))


def wait_for_checkpoint(cluster: SlurmCluster, job_id: str, out: Path, timeout: float = 300) -> None:
    """Wait until the job has written its first checkpoint (the first epoch is done: training is under way)."""
    deadline = time.monotonic() + timeout
    while not (out / "pytorch_model_folder" / f"checkpoint-{EPOCH_STEPS}" / "trainer_state.json").exists():
        job = cluster.job(job_id)
        assert job["JobState"] in ("PENDING", "RUNNING"), log_of(job)
        assert time.monotonic() < deadline, f"no checkpoint after {timeout:.0f} s"
        time.sleep(0.2)


def assert_on_both_nodes(out: Path) -> None:
    """metrics.json's "ranks": rank 0 and 1, each the only process (local rank 0) of its node, on n1 and n2."""
    ranks = json.loads((out / "metrics.json").read_text())["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1], ranks
    assert [r["local_rank"] for r in ranks] == [0, 0], ranks
    assert sorted(r["node"] for r in ranks) == ["n1", "n2"], ranks


def assert_curve(curve: dict[int, float], expected: dict[int, float], steps: range, rel: float) -> None:
    assert set(steps) <= set(curve), sorted(curve)
    for step in steps:
        assert curve[step] == pytest.approx(expected[step], rel=rel), (step, curve[step], expected[step])


@pytest.fixture(scope="module")
def one_process(slurm_two_nodes: SlurmCluster, tmp_path_factory: pytest.TempPathFactory, assets: tuple[Path, Path], job_env: None) -> dict[int, float]:
    """The reference: one process on one node, 16 rows per step; its loss per step."""
    build = make_build(tmp_path_factory.mktemp("one-process"), assets, nodes=1)
    job = slurm_two_nodes.wait(submit(slurm_two_nodes, build), timeout=400)
    assert job["JobState"] == "COMPLETED", log_of(job)
    return losses(build.parents[1] / "out")


@pytest.fixture(scope="module")
def two_nodes(slurm_two_nodes: SlurmCluster, tmp_path_factory: pytest.TempPathFactory, assets: tuple[Path, Path], job_env: None) -> dict[str, object]:
    """One uninterrupted job on both nodes: its fields, log, output folder and loss per step."""
    build = make_build(tmp_path_factory.mktemp("two-nodes"), assets, nodes=2)
    job = slurm_two_nodes.wait(submit(slurm_two_nodes, build), timeout=400)
    out = build.parents[1] / "out"
    return {"job": job, "log": log_of(job), "out": out, "losses": losses(out) if (out / "train_log_history.json").exists() else {}}


@pytest.mark.slurm
@pytest.mark.slow
def test_trains_across_both_nodes(two_nodes: dict[str, object], one_process: dict[int, float]) -> None:
    job, log, out, curve = two_nodes["job"], str(two_nodes["log"]), two_nodes["out"], two_nodes["losses"]
    assert isinstance(job, dict) and isinstance(out, Path) and isinstance(curve, dict)
    assert job["JobState"] == "COMPLETED", log
    assert job["NodeList"] == "n[1-2]" and job["NumNodes"] == "2", job
    # one srun task per node, each a torchrun whose one process is that node's rank; the rendezvous on n1
    assert "job.sbatch: 2 node(s) n1 n2; c10d rendezvous on n1 at 127.0.0.1:" in log, log
    assert "batch 8 x 2 process(es)" in log, log
    assert_on_both_nodes(out)
    assert checkpoint_steps(out) == [EPOCH_STEPS, STEPS]
    # the same curve as one process with the same global batch: the gradients were all-reduced
    assert sorted(curve) == sorted(one_process) == list(range(1, STEPS + 1))
    assert max(abs(one_process[s + 1] - one_process[s]) / one_process[s] for s in range(1, STEPS)) > 1e-2
    assert_curve(curve, one_process, range(1, STEPS + 1), rel=1e-5)


@pytest.mark.slurm
@pytest.mark.slow
def test_preemption_requeues_and_resumes_on_both_nodes(
    slurm_two_nodes: SlurmCluster, two_nodes: dict[str, object], tmp_path: Path, assets: tuple[Path, Path],
    job_env: None, request: pytest.FixtureRequest,
) -> None:
    uninterrupted = two_nodes["losses"]
    assert isinstance(uninterrupted, dict) and uninterrupted, two_nodes["log"]
    build = make_build(tmp_path, assets, nodes=2, requeue=True)
    out = tmp_path / "out"
    job_id = submit(slurm_two_nodes, build)
    wait_for_checkpoint(slurm_two_nodes, job_id, out)
    # What SLURM does signal_seconds before the time limit (--signal=B:USR2@120), by hand.
    signalled = time.monotonic()
    slurm_two_nodes.run(["scancel", "--batch", "--signal=USR2", job_id])
    running_again = wait_restarted(slurm_two_nodes, job_id)
    job = slurm_two_nodes.wait(job_id, timeout=400)
    log = log_of(job)
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1", log
    stopped = re.search(r"stopped at step (\d+) on SIGUSR2", log)
    assert stopped and "requeueing job" in log, log
    step = int(stopped.group(1))
    assert EPOCH_STEPS <= step < STEPS
    assert f"resuming from {out}/pytorch_model_folder/checkpoint-{step}" in log, log  # nothing lost: no step redone
    assert log.count("c10d rendezvous on n1 at 127.0.0.1:") == 2, log  # both runs on both nodes
    assert_on_both_nodes(out)
    assert checkpoint_steps(out)[-1] == STEPS
    assert_curve(losses(out), uninterrupted, range(1, STEPS + 1), rel=1e-4)
    request.node.user_properties += [
        ("preemption_steps_redone", 0), ("preemption_signal_to_running_again_s", round(running_again - signalled, 1))
    ]


def wait_restarted(cluster: SlurmCluster, job_id: str, timeout: float = 300) -> float:
    """Wait until the requeued job runs again (Restarts 1, RUNNING); when it did (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while True:
        job = cluster.job(job_id)
        if job.get("Restarts") == "1" and job["JobState"] == "RUNNING":
            return time.monotonic()
        assert job["JobState"] not in ("COMPLETED", "FAILED", "CANCELLED"), log_of(job)
        assert time.monotonic() < deadline, f"job {job_id} not running again after {timeout:.0f} s: {job}"
        time.sleep(0.2)


def task_processes(job_id: str, node: str) -> list[int]:
    """The pids of the job's task on `node` (torchrun and its training process): processes whose
    environment says this job and this node, not SLURM's own slurmstepd."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            comm = (proc / "comm").read_text().strip()
        except OSError:
            continue  # gone, or not ours to read
        if comm != "slurmstepd" and f"SLURM_JOB_ID={job_id}".encode() in environ and f"SLURMD_NODENAME={node}".encode() in environ:
            pids.append(int(proc.name))
    return pids


@pytest.mark.slurm
@pytest.mark.slow
def test_lost_node_fails_the_job_and_a_resubmit_resumes(
    slurm_two_nodes: SlurmCluster, two_nodes: dict[str, object], tmp_path: Path, assets: tuple[Path, Path],
    job_env: None, request: pytest.FixtureRequest,
) -> None:
    uninterrupted = two_nodes["losses"]
    assert isinstance(uninterrupted, dict) and uninterrupted, two_nodes["log"]
    build = make_build(tmp_path, assets, nodes=2)
    out = tmp_path / "out"
    job_id = submit(slurm_two_nodes, build)
    wait_for_checkpoint(slurm_two_nodes, job_id, out)
    # n2 crashes: its slurmd and its rank's processes die at once (SIGKILL: nothing is saved)
    processes = task_processes(job_id, "n2")
    assert processes, "no process of the job on n2"
    killed = time.monotonic()
    slurm_two_nodes.kill_slurmd("n2")
    for pid in processes:
        os.kill(pid, signal.SIGKILL)
    # Bounded: srun --kill-on-bad-exit ends the rank on n1 and the job; it stays COMPLETING until n2's slurmd
    # answers again (SLURM cleans up every node of a job), then it is FAILED.
    slurm_two_nodes.wait(job_id, timeout=180, states=FINAL_STATES | {"COMPLETING"})
    failed = time.monotonic()
    assert task_processes(job_id, "n1") == [], "the rank on n1 outlived the job"
    last, trained = checkpoint_steps(out)[-1], last_logged_step(out)
    slurm_two_nodes.start_slurmd("n2")
    job = slurm_two_nodes.wait(job_id, timeout=120)
    assert job["JobState"] == "FAILED" and job["ExitCode"] != "0:0", log_of(job)
    slurm_two_nodes.wait_nodes({"idle"})
    back = time.monotonic()

    resumed_id = submit(slurm_two_nodes, build, "--resume_from_checkpoint", "true")
    job = slurm_two_nodes.wait(resumed_id, timeout=400)
    log = log_of(job)
    assert job["JobState"] == "COMPLETED", log
    assert f"resuming from {out}/pytorch_model_folder/checkpoint-{last}" in log, log
    assert_on_both_nodes(out)
    assert checkpoint_steps(out)[-1] == STEPS
    assert_curve(losses(out), uninterrupted, range(last + 1, STEPS + 1), rel=1e-4)
    request.node.user_properties += [
        ("lost_node_steps_redone", trained - last),
        ("lost_node_kill_to_job_ended_s", round(failed - killed, 1)),
        ("lost_node_kill_to_nodes_idle_s", round(back - killed, 1)),
    ]
