"""Data, models and outputs on object stores, against real servers on loopback (tests/services.py): moto's S3
server, Azurite (Azure Blob) and fake-gcs-server. Credentials reach the runtime only through the environment.

A run reads its model from S3 and writes its checkpoints there; a resume on another node (another cache
folder) downloads the newest complete one and follows the uninterrupted run's curve.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.runtime.conftest import TINY_SPEC
from tests.runtime.test_training_loop import _stop_at
from tests.services import Service, azurite_server, gcs_server, s3_server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

# 240 rows / 16 = 15 steps per epoch; evaluation and checkpoints every 4 steps, all kept.
EVERY_4 = ("--evaluation_strategy", "steps", "--eval_steps", "4", "--save_total_limit", "-1", "--metric_for_best_model", "loss")
COMMON = ("--max_steps", "12", *EVERY_4)


def _use(service: Service, monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """The service's environment and a node cache folder for this test; fresh fsspec filesystems."""
    import fsspec

    service.apply(monkeypatch)
    monkeypatch.setenv("FTC_CACHE_DIR", str(cache))
    fsspec.AbstractFileSystem.clear_instance_cache()
    for cls in fsspec.registry.values():
        if hasattr(cls, "clear_instance_cache"):
            cls.clear_instance_cache()


def _put_folder(folder: Path, uri: str) -> None:
    """Upload a local folder (creating its bucket or container)."""
    from ftc.runtime import storage

    fs, path = storage.filesystem(uri)
    bucket = path.split("/")[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    storage.upload_folder(folder, uri)


@pytest.fixture
def next_run(monkeypatch: pytest.MonkeyPatch):
    """`next_run(callback)`: the next in-process run's Trainer gets `callback` too."""
    import ftc.runtime.hf_trainer as hf_trainer

    original = hf_trainer.make_trainer

    def add(callback) -> None:
        def make(*a, **kw):
            trainer = original(*a, **kw)
            trainer.add_callback(callback)
            monkeypatch.setattr(hf_trainer, "make_trainer", original)
            return trainer

        monkeypatch.setattr(hf_trainer, "make_trainer", make)

    return add


def _eval_losses(state_file: Path) -> list[float]:
    return [h["eval_loss"] for h in json.loads(state_file.read_text())["log_history"] if "eval_loss" in h]


# --------------------------------------------------------------------------- S3: model in, checkpoints out, resume


def test_a_run_reads_its_model_from_s3_writes_checkpoints_there_and_resumes_from_them(
    s3_server: Service, monkeypatch, tmp_path: Path, project: Path, tiny_model: Path, compile_config, run_inprocess, next_run
) -> None:
    from ftc.runtime import storage

    _use(s3_server, monkeypatch, tmp_path / "node1")
    _put_folder(tiny_model, "s3://ftc-models/tiny")
    fs, _ = storage.filesystem("s3://ftc-runs")
    fs.mkdir("ftc-runs")

    straight = compile_config(name="straight.yaml", build="straight")
    code, _, err = run_inprocess(straight, *COMMON, "--output_dir", str(project / "straight"))
    assert code == 0, err

    spec = TINY_SPEC.replace("model: ./models/tiny", "model: s3://ftc-models/tiny").replace("output_dir: out", "output_dir: s3://ftc-runs/tc")
    spec += "env:\n  secrets: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]\n"
    config = compile_config(spec)
    next_run(_stop_at(6))
    code, _, err = run_inprocess(config, *COMMON)
    assert code == 0, err
    assert "model.model_selector_output s3://ftc-models/tiny downloaded" in err
    remote = "ftc-runs/tc/pytorch_model_folder"
    fs.invalidate_cache()
    assert sorted(n for p in fs.ls(remote) if (n := p.rsplit("/", 1)[-1]).startswith("checkpoint-")) == ["checkpoint-4", "checkpoint-6"]
    assert fs.exists(f"{remote}/checkpoint-6/{storage.COMPLETE_MARKER}")
    # a cut upload (no marker) of a later step is never resumed from
    fs.put_file(str(project / "data" / "train.jsonl"), f"{remote}/checkpoint-9/trainer_state.json")

    _use(s3_server, monkeypatch, tmp_path / "node2")  # another node: nothing staged, nothing cached
    code, _, err = run_inprocess(config, *COMMON, "--resume_from_checkpoint", "true")
    assert code == 0, err
    assert f"downloaded s3://{remote}/checkpoint-6" in err and "resuming from" in err and "checkpoint-6" in err

    local = project / "straight" / "pytorch_model_folder" / "checkpoint-12" / "trainer_state.json"
    fetched = tmp_path / "resumed_state.json"
    fs.get_file(f"{remote}/checkpoint-12/trainer_state.json", str(fetched))
    assert _eval_losses(fetched) == pytest.approx(_eval_losses(local), abs=1e-6)
    assert len(_eval_losses(fetched)) == 3
    for name in ("metrics.json", "ftc_runtime.log", "mlflow_model_folder/MLmodel", "pytorch_model_folder/model.safetensors"):
        assert fs.exists(f"ftc-runs/tc/{name}"), name
    _assert_no_credentials(s3_server, config, err, fs.cat("ftc-runs/tc/ftc_runtime.log").decode())

    # a remote checkpoint named by its URI: downloaded once into the node's cache, resumed, curve kept
    _use(s3_server, monkeypatch, tmp_path / "node3")
    given = ("--output_dir", str(project / "from_uri"), "--resume_from_checkpoint")
    code, _, err = run_inprocess(config, *COMMON, *given, f"s3://{remote}/checkpoint-9")
    assert code == 1 and f"checkpointing.resume_from_checkpoint s3://{remote}/checkpoint-9: cannot resume from it" in err
    code, _, err = run_inprocess(config, *COMMON, *given, f"s3://{remote}/checkpoint-4")
    assert code == 0, err
    assert f"checkpointing.resume_from_checkpoint s3://{remote}/checkpoint-4 downloaded" in err and "resuming from" in err
    resumed = project / "from_uri" / "pytorch_model_folder" / "checkpoint-12" / "trainer_state.json"
    assert _eval_losses(resumed) == pytest.approx(_eval_losses(local), abs=1e-6)


def test_checkpoints_rotated_out_locally_are_deleted_from_the_store(
    s3_server: Service, monkeypatch, tmp_path: Path, compile_config, run_inprocess
) -> None:
    from ftc.runtime import storage
    from ftc.runtime.config import load_config

    _use(s3_server, monkeypatch, tmp_path / "node")
    fs, _ = storage.filesystem("s3://ftc-rotate")
    fs.mkdir("ftc-rotate")
    config = compile_config(TINY_SPEC.replace("output_dir: out", "output_dir: s3://ftc-rotate/run"))
    rotation = ("--evaluation_strategy", "steps", "--eval_steps", "2", "--save_total_limit", "1", "--metric_for_best_model", "loss")
    code, _, err = run_inprocess(config, "--max_steps", "8", *rotation)
    assert code == 0, err
    assert "uploaded checkpoint-2" in err and "uploaded checkpoint-8" in err
    fs.invalidate_cache()
    remote = sorted(n for p in fs.ls("ftc-rotate/run/pytorch_model_folder") if (n := p.rsplit("/", 1)[-1]).startswith("checkpoint-"))
    staged = load_config(config).output_dir / "pytorch_model_folder"
    assert remote == sorted(p.name for p in staged.glob("checkpoint-*"))
    assert "checkpoint-8" in remote and len(remote) <= 2


def _assert_no_credentials(service: Service, config: Path, *texts: str) -> None:
    secret = service.env["AWS_SECRET_ACCESS_KEY"]
    assert secret not in config.read_text()
    for text in texts:
        assert secret not in text


def test_a_cut_download_leaves_no_model_behind(s3_server: Service, monkeypatch, tmp_path: Path, tiny_model: Path) -> None:
    from ftc.runtime import storage
    from ftc.runtime.errors import RuntimeUserError

    _use(s3_server, monkeypatch, tmp_path / "cache")
    _put_folder(tiny_model, "s3://ftc-models/cut")
    fs, _ = storage.filesystem("s3://ftc-models/cut")
    calls = []
    original = fs.get_file  # the filesystem instance is cached: cached_copy gets this one

    def cut(remote, local, **kw):
        calls.append(remote)
        if len(calls) == 2:
            raise ConnectionResetError("connection reset")
        return original(remote, local, **kw)

    monkeypatch.setattr(fs, "get_file", cut)
    with pytest.raises(ConnectionResetError):
        storage.cached_copy("s3://ftc-models/cut", "model")
    assert len(calls) == 2
    assert [p.name for p in (tmp_path / "cache" / "remote").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.setattr(fs, "get_file", original)
    copy = storage.cached_copy("s3://ftc-models/cut", "model")
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    with pytest.raises(RuntimeUserError, match="model s3://ftc-models/missing not found"):
        storage.cached_copy("s3://ftc-models/missing", "model")


_DOWNLOAD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(message)s")
from ftc.runtime import storage
print(storage.cached_copy(sys.argv[1], "model"), flush=True)
"""


def test_the_processes_of_a_node_download_a_model_once(s3_server: Service, monkeypatch, tmp_path: Path, tiny_model: Path) -> None:
    """Four processes (the ranks of a node) ask for the same model at once: one downloads, the others wait on the lock."""
    import os
    import subprocess
    import sys

    _use(s3_server, monkeypatch, tmp_path / "cache")
    _put_folder(tiny_model, "s3://ftc-models/shared")
    procs = [
        subprocess.Popen([sys.executable, "-c", _DOWNLOAD, "s3://ftc-models/shared"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=dict(os.environ))
        for _ in range(4)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1
    assert sum("downloaded to" in err for _, err in results) == 1
    copy = Path(results[0][0].strip())
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in tiny_model.iterdir())


# --------------------------------------------------------------------------- Azure Blob and GCS: data and models


@pytest.mark.parametrize(("server", "scheme"), [("azurite_server", "abfs"), ("azurite_server", "az"), ("gcs_server", "gs")])
def test_data_and_a_model_are_read_from_the_store(
    request, server: str, scheme: str, monkeypatch, tmp_path: Path, project: Path, tiny_model: Path, compile_config
) -> None:
    from ftc.runtime import storage
    from ftc.runtime.data import read_table
    from ftc.runtime.models import load_model, load_tokenizer, model_source

    _use(request.getfixturevalue(server), monkeypatch, tmp_path / "cache")
    bucket = f"ftc-{scheme}"
    _put_folder(tiny_model, f"{scheme}://{bucket}/models/tiny")
    _put_folder(project / "data", f"{scheme}://{bucket}/data")

    fs, path = storage.filesystem(f"{scheme}://{bucket}/data/train.jsonl")
    with fs.open(path, "rb") as f:
        assert f.read() == (project / "data" / "train.jsonl").read_bytes()
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    remote_rows = list(read_table(f"{scheme}://{bucket}/data/validation.jsonl", "validation").rows)
    assert remote_rows == list(read_table(project / "data" / "validation.jsonl", "validation").rows)
    assert len(remote_rows) == 60

    from ftc.runtime.config import load_config
    from transformers import AutoModelForSequenceClassification

    spec = TINY_SPEC.replace("model: ./models/tiny", f"model: {scheme}://{bucket}/models/tiny")
    cfg = load_config(compile_config(spec))
    local = Path(model_source(cfg))
    assert local.is_relative_to(tmp_path / "cache") and (local / "config.json").is_file()
    assert load_tokenizer(cfg)("cat dog")["input_ids"]
    assert load_model(AutoModelForSequenceClassification, cfg).config.hidden_size == 64
