"""Plain DDP (torchrun, gloo on CPU) through the local target's run.sh against one process with the
same effective batch: the per-step training losses match, and only rank 0 writes outputs.

Why the two runs see the same samples at every step: the Trainer samples the training rows with a
RandomSampler that accelerate replaces by a SeedableRandomSampler (seeded by training.seed, one
permutation on every rank, in one process too), and with two processes it shards the batches of
8 rows of that permutation in turn (BatchSamplerShard: batches 0, 2, 4, ... to rank 0; 1, 3, 5, ...
to rank 1). So step j takes rows perm[16 j : 16 j + 16] in both runs, split 8 + 8 with DDP.
The loss of a step is then the mean of the two ranks' mean losses (the Trainer gathers and
averages them), which is the mean over the 16 rows, and DDP averages the gradients, which is the
gradient of that mean. Dropout is set to 0 in the tiny model (its random masks would differ).

What is left is float rounding (the gradient is summed in another order: an all-reduce of two
halves against one batched sum): the curves agree to about 2e-7 relative over the 30 steps, so
1e-5 relative per step leaves room for other CPUs and BLAS builds and is far below what anything
else gives: ranks training without the gradient all-reduce (the runtime's evaluation before
training once left the model marked prepared, so train() did not wrap it in DDP) were 1e-3 off at
step 3 and 12% at step 30, and other batches differ by several percent (checked below).
The learning rate of the first step is 0 (warmup), so the curves compare updates from step 3 on.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.runtime.conftest import TINY_SPEC
from tests.runtime.multiproc import compile_and_run, losses

pytestmark = pytest.mark.slow

# TINY_SPEC for 2 epochs (30 steps of 16 rows over 240 rows), a loss logged at every step.
DDP_SPEC = TINY_SPEC.replace("num_train_epochs: 8", "num_train_epochs: 2").replace(
    "model: ./models/tiny", "model: ./models/tiny_nodropout"
) + textwrap.dedent(
    """\
    tracking:
      logging_strategy: steps
      logging_steps: 1
      save_metrics: true
    resources:
      device: cpu
    """
)


def _no_dropout_model(project: Path) -> None:
    """models/tiny_nodropout: the session's tiny classifier with dropout 0."""
    src, dst = project / "models" / "tiny", project / "models" / "tiny_nodropout"
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    config = json.loads((dst / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (dst / "config.json").write_text(json.dumps(config))


def _run(project: Path, name: str, processes: int, batch: int) -> tuple[Path, subprocess.CompletedProcess[str]]:
    spec = DDP_SPEC.replace("per_device_train_batch_size: 16", f"per_device_train_batch_size: {batch}")
    return compile_and_run(project, spec + f"  processes_per_node: {processes}\n", name, processes)


def test_ddp_two_processes_match_one_process_with_the_same_batch(project: Path) -> None:
    _no_dropout_model(project)
    single, _ = _run(project, "single", processes=1, batch=16)
    ddp, result = _run(project, "ddp", processes=2, batch=8)

    one, two = losses(single), losses(ddp)
    assert sorted(one) == sorted(two) == list(range(1, 31))
    # different batches would be far apart: neighbouring steps differ by much more than the tolerance
    assert max(abs(one[s + 1] - one[s]) / one[s] for s in range(1, 30)) > 1e-2
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), (step, one[step], two[step])
    m1, m2 = (json.loads((o / "metrics.json").read_text()) for o in (single, ddp))
    assert m2["eval_accuracy"] == pytest.approx(m1["eval_accuracy"], abs=1e-6)
    # the distributed evaluation batches the 60 rows differently (30 + 30): a little float noise
    assert m2["eval_loss"] == pytest.approx(m1["eval_loss"], rel=1e-3)

    # one writer: the same files as the single process, one MLflow run, rank 0's log lines only
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
    assert "x 2 process(es)" in (ddp / "ftc_runtime.log").read_text()
    for out in (single, ddp):
        with sqlite3.connect(out / "mlflow.db") as db:
            assert db.execute("select count(*) from runs").fetchone()[0] == 1
    assert result.stderr.count("x 2 process(es)") == 1  # the console's info lines come from rank 0 alone
    assert result.stderr.count("validation after training") == 1

    # where each rank ran: metrics.json's "ranks" (gathered to rank 0) and one log line per rank
    host = socket.gethostname()
    assert m1["ranks"] == [{"rank": 0, "local_rank": 0, "node": host, "hostname": host}]
    assert m2["ranks"] == [{"rank": r, "local_rank": r, "node": host, "hostname": host} for r in (0, 1)]
    log = (ddp / "ftc_runtime.log").read_text()
    assert all(f"rank {r} of 2 on node {host} (host {host}, local rank {r})" in log for r in (0, 1))
