"""Outputs of a run: the MLflow model, training_curves.png, MLflow tracking (SQLite) and W&B."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.runtime.tiny import classification_rows

pytestmark = pytest.mark.slow


def _validation(project: Path) -> list[dict]:
    return [json.loads(x) for x in (project / "data" / "validation.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- MLflow model


def test_mlflow_model_loads_offline_and_predicts_the_trained_labels(compile_config, project: Path, run_inprocess) -> None:
    import mlflow.pyfunc
    import yaml

    code, _, err = run_inprocess(compile_config())
    assert code == 0, err
    out = project / "out"
    folder = out / "mlflow_model_folder"
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    assert mlmodel["flavors"]["transformers"]["task"] == "text-classification"
    requirements = (folder / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("torch==") and "+" not in r for r in requirements), requirements
    assert any(r.startswith("transformers==") for r in requirements)
    assert not any("torchvision" in r for r in requirements)  # MLflow would add it; a CPU torch has none
    assert not list(out.glob(".mlflow_model_folder*")), "the staging folder is removed"

    rows = _validation(project)
    predictions = mlflow.pyfunc.load_model(str(folder)).predict([r["text"] for r in rows])
    labels = list(predictions["label"])
    accuracy = sum(p == r["label"] for p, r in zip(labels, rows)) / len(rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["eval_accuracy"])  # the best model, with the data's label names
    assert accuracy >= 0.9


def test_save_as_mlflow_model_false_writes_none(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(compile_config(), "--max_steps", "2", "--save_as_mlflow_model", "false")
    assert code == 0, err
    assert not (project / "out" / "mlflow_model_folder").exists()
    assert (project / "out" / "pytorch_model_folder" / "model.safetensors").exists()


def test_a_second_run_replaces_the_mlflow_model_in_a_linked_folder(compile_config, project: Path, run_inprocess) -> None:
    """Azure ML links mlflow_model_folder to its job output: the link stays, its contents are replaced."""
    target = project / "azureml_output"
    target.mkdir()
    (target / "stale.txt").write_text("from an earlier run")
    (project / "out").mkdir()
    (project / "out" / "mlflow_model_folder").symlink_to(target, target_is_directory=True)
    code, _, err = run_inprocess(compile_config(), "--max_steps", "2")
    assert code == 0, err
    assert (project / "out" / "mlflow_model_folder").is_symlink()
    assert (target / "MLmodel").is_file() and not (target / "stale.txt").exists()


def test_lora_adapter_only_still_gives_a_full_mlflow_model(compile_config, project: Path, run_inprocess) -> None:
    """merge_lora_weights false: pytorch_model_folder holds the adapter, the MLflow model the merged model."""
    import mlflow.pyfunc
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    code, _, err = run_inprocess(
        compile_config(), "--apply_lora", "true", "--lora_r", "4", "--lr", "0.01", "--max_steps", "12",
        "--merge_lora_weights", "false",
    )
    assert code == 0, err
    adapter_dir = project / "out" / "pytorch_model_folder"
    assert (adapter_dir / "adapter_model.safetensors").exists()
    folder = project / "out" / "mlflow_model_folder"
    assert (folder / "model" / "model.safetensors").exists()  # a full model: no base model needed elsewhere
    assert not list(folder.rglob("adapter_config.json"))

    texts = [r["text"] for r in classification_rows(20, seed=7)]
    predicted = mlflow.pyfunc.load_model(str(folder)).predict(texts)
    info = json.loads((adapter_dir / "ftc_model_info.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(
        str(project / "models" / "tiny"), num_labels=info["num_labels"],
        id2label={int(k): v for k, v in info["id2label"].items()}, label2id=info["label2id"], ignore_mismatched_sizes=True,
    )
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    with torch.no_grad():
        probs = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    expected = [info["id2label"][str(i)] for i in probs.argmax(-1).tolist()]
    assert list(predicted["label"]) == expected
    assert list(predicted["score"]) == pytest.approx(probs.max(-1).values.tolist(), abs=1e-4)


def test_pip_requirements_are_pinned_without_local_tags() -> None:
    from ftc.runtime.outputs import pip_requirements

    reqs = pip_requirements()
    names = [r.split("==")[0] for r in reqs]
    assert names == ["mlflow", "torch", "transformers", "tokenizers", "safetensors"]
    assert all("==" in r and "+" not in r for r in reqs)


# --------------------------------------------------------------------------- training_curves.png


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_training_curves_png_next_to_metrics(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(compile_config(), "--logging_strategy", "steps", "--logging_steps", "5")
    assert code == 0, err
    png = project / "out" / "training_curves.png"
    assert (project / "out" / "metrics.json").exists()
    width, height = _png_size(png)
    assert width >= 1200 and height >= 800  # four panels: loss, metrics, learning rate, before / after
    assert png.stat().st_size > 40_000


def test_training_curves_from_a_log_history(tmp_path: Path) -> None:
    """The drawing on its own: a run with evaluations (four panels) and one without (two), and nothing to draw."""
    from ftc.runtime.outputs import write_training_curves

    history = [{"eval_loss": 1.1, "eval_accuracy": 0.33, "eval_mcc": 0.0, "eval_runtime": 0.1, "step": 0}]
    for step in range(1, 41):
        history.append({"loss": 1.1 * 0.95**step, "learning_rate": 1e-3 * (1 - step / 40), "epoch": step / 10, "step": step})
        if step % 10 == 0:
            history.append({"eval_loss": 1.1 * 0.9 ** (step / 5), "eval_accuracy": min(1.0, 0.33 + step / 50),
                            "eval_mcc": min(1.0, step / 40), "epoch": step / 10, "step": step})
    history.append({"train_runtime": 3.2, "train_loss": 0.5, "step": 40})
    history.append({"eval_loss": 0.2, "eval_accuracy": 1.0, "eval_mcc": 1.0, "step": 40})
    path = write_training_curves(tmp_path / "a.png", history, "demo: text_classification, tiny", "accuracy 0.33 -> 1.0", 40,
                                 ["240 rows", "40 steps"])
    assert path is not None and _png_size(path)[1] >= 800
    no_eval = [h for h in history if "eval_loss" not in h]
    path = write_training_curves(tmp_path / "b.png", no_eval, "no validation")
    assert path is not None and _png_size(path)[1] < 600  # one row of panels
    assert write_training_curves(tmp_path / "c.png", [{"train_runtime": 1.0, "step": 0}], "empty") is None
    assert not (tmp_path / "c.png").exists()


# --------------------------------------------------------------------------- progress bar, throughput, save_metrics


def test_throughput_on_the_progress_bar_and_in_the_logs(compile_config, project: Path, run_inprocess) -> None:
    from transformers import AutoTokenizer

    code, _, err = run_inprocess(compile_config(), "--num_train_epochs", "2", "--save_metrics", "true",
                                 "--evaluation_strategy", "no")
    assert code == 0, err
    assert "samples/s" in err and "tokens/s" in err  # the tqdm bar's postfix
    history = json.loads((project / "out" / "train_log_history.json").read_text())
    epochs = [h for h in history if "loss" in h]
    assert len(epochs) == 2 and all(h["samples_per_second"] > 0 and h["tokens_per_second"] > 0 for h in epochs)
    # One log per epoch: every training row once, so tokens / samples is the mean real (non-pad) length.
    tokenizer = AutoTokenizer.from_pretrained(str(project / "models" / "tiny"))
    rows = [json.loads(x) for x in (project / "data" / "train.jsonl").read_text().splitlines()]
    mean_length = sum(len(tokenizer(r["text"], truncation=True, max_length=32)["input_ids"]) for r in rows) / len(rows)
    for h in epochs:
        assert h["tokens_per_second"] / h["samples_per_second"] == pytest.approx(mean_length, rel=1e-3)
    metrics = json.loads((project / "out" / "metrics.json").read_text())
    assert metrics["train_tokens_per_second"] > metrics["train_samples_per_second"] > 0


# --------------------------------------------------------------------------- MLflow tracking


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_mlflow_tracking_to_sqlite_in_the_output_folder(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(compile_config(), "--logging_strategy", "steps", "--logging_steps", "10",
                                 "--num_train_epochs", "2")
    assert code == 0, err
    out = project / "out"
    db = out / "mlflow.db"
    assert db.is_file() and not (project / "mlruns").exists()
    client = _client(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("text_classification_finetune")  # the spec's name
    assert exp is not None and exp.artifact_location == (out / "mlartifacts").as_uri()
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.learning_rate"] == "0.002"
    assert run.data.params["training.per_device_train_batch_size"] == "16"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [10, 20, 30]
    accuracy = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "eval_accuracy"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert accuracy[0] == (0, pytest.approx(metrics["initial_eval_accuracy"]))  # before training: step 0
    assert accuracy[-1] == (30, pytest.approx(metrics["eval_accuracy"]))
    assert client.get_metric_history(run.info.run_id, "tokens_per_second")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "training_curves.png"} <= artifacts
    assert json.loads((out / "ftc_tracking.json").read_text())["mlflow_run_id"] == run.info.run_id


def test_tracking_uri_and_experiment_name_from_the_spec(compile_config, project: Path, run_inprocess, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    code, _, err = run_inprocess(compile_config(), "--max_steps", "2", "--tracking_uri", uri, "--experiment_name", "mine",
                                 cwd=cwd)
    assert code == 0, err
    assert not (project / "out" / "mlflow.db").exists()
    exp = _client(uri).get_experiment_by_name("mine")
    assert exp.artifact_location == (tmp_path / "mlartifacts").as_uri()
    (run,) = _client(uri).search_runs([exp.experiment_id])
    assert run.data.metrics["train_loss"] > 0
    assert (tmp_path / "mlartifacts" / run.info.run_id / "artifacts" / "metrics.json").is_file()
    assert list(cwd.iterdir()) == []  # no ./mlruns


def test_a_tracking_store_that_cannot_open_stops_before_training(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(compile_config(), "--tracking_uri", f"sqlite:///{project}/spec.yaml/x.db")  # under a file
    assert code == 1
    assert "cannot open the MLflow tracking store sqlite:///" in err and "tracking.tracking_uri" in err
    assert not (project / "out" / "pytorch_model_folder").exists()


def test_resumed_run_continues_its_mlflow_run(compile_config, project: Path, run_inprocess) -> None:
    config = compile_config()
    steps = ("--evaluation_strategy", "steps", "--eval_steps", "2", "--save_total_limit", "-1")
    assert run_inprocess(config, "--max_steps", "4", *steps)[0] == 0
    resume = ("--resume_from_checkpoint", "true", "--resume_ignore_config_change", "true")  # a longer run, on purpose
    assert run_inprocess(config, "--max_steps", "6", *steps, *resume)[0] == 0
    client = _client(f"sqlite:///{project / 'out' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("text_classification_finetune")
    (run,) = client.search_runs([exp.experiment_id])
    steps_logged = {m.step for m in client.get_metric_history(run.info.run_id, "eval_loss")}
    assert {2, 4, 6} <= steps_logged and run.info.status == "FINISHED"


# --------------------------------------------------------------------------- Weights & Biases


def test_use_wandb_without_the_package_is_a_clear_error(compile_config, project: Path, run_inprocess, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # not importable, whether or not it is installed
    code, _, err = run_inprocess(compile_config(), "--use_wandb", "true")
    assert code == 1
    assert "tracking.use_wandb needs the wandb package, which is not installed: pip install wandb" in err
    assert not (project / "out" / "pytorch_model_folder").exists()


FAKE_WANDB = '''
import json, os
RECORD = os.environ["FAKE_WANDB_RECORD"]

class _Run:
    def __init__(self, kwargs):
        self.data = {"init": kwargs, "logs": [], "finished": None}
    def log(self, values, step=None):
        self.data["logs"].append({"step": step, **values})
    def finish(self, exit_code=0):
        self.data["finished"] = exit_code
        with open(RECORD, "w") as f:
            json.dump(self.data, f, default=str)

def init(**kwargs):
    return _Run(kwargs)
'''


def test_use_wandb_logs_offline_without_a_key(compile_config, project: Path, run_inprocess, monkeypatch, tmp_path: Path) -> None:
    fake = tmp_path / "fake_wandb"
    fake.mkdir()
    (fake / "wandb.py").write_text(textwrap.dedent(FAKE_WANDB))
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("FAKE_WANDB_RECORD", str(tmp_path / "record.json"))
    code, _, err = run_inprocess(compile_config(), "--use_wandb", "true", "--max_steps", "4", "--logging_strategy", "steps",
                                 "--logging_steps", "2", "--tracking.wandb_config.project", "demo", "--tracking.wandb_config.tags", "a,b")
    assert code == 0, err
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["init"]["mode"] == "offline" and record["init"]["project"] == "demo"
    assert record["init"]["tags"] == ["a", "b"] and record["init"]["dir"] == str(project / "out")
    assert [x["step"] for x in record["logs"] if "loss" in x] == [2, 4]
    assert record["finished"] == 0


# --------------------------------------------------------------------------- python_function models (no pipeline)


class _Done:
    """What save_mlflow_model reads of a finished Trainer: its model."""

    def __init__(self, model) -> None:
        self.model = model


@pytest.mark.parametrize("task", ["translation", "summarization"])
def test_seq2seq_mlflow_model_generates_like_the_model(tmp_path: Path, task: str) -> None:
    """transformers 5 has no translation / summarization pipeline: a python_function model that adds the
    source prefix and generates as the trained model does."""
    import mlflow.pyfunc
    import torch
    import yaml
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from ftc.runtime.outputs import save_mlflow_model
    from tests.runtime.tiny_seq2seq import make_tiny_t5

    folder = make_tiny_t5(tmp_path / "t5")
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))
    prefix = "summarize: " if task == "summarization" else "translate English to German: "
    info = {"source_prefix": prefix, "max_seq_length": 32, "generation_max_length": 6, "generation_num_beams": 1, "labels": [1]}
    path = save_mlflow_model(task, _Done(model), tokenizer, tmp_path / "out", info=info)
    assert path == tmp_path / "out" / "mlflow_model_folder"
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    assert "transformers" not in mlmodel["flavors"] and "python_function" in mlmodel["flavors"]
    assert not list((tmp_path / "out").glob(".mlflow_model_folder*"))

    texts = ["cat sees dog", "the red car and the green tree"]
    loaded = mlflow.pyfunc.load_model(str(path))
    got = loaded.predict(texts)
    with torch.no_grad():
        enc = tokenizer([prefix + t for t in texts], padding=True, return_tensors="pt")
        expected = tokenizer.batch_decode(model.eval().generate(**enc, max_new_tokens=6, num_beams=1), skip_special_tokens=True)
    assert got == [e.strip() for e in expected]
    assert len(loaded.predict(texts[:1], params={"max_new_tokens": 2})[0].split()) <= 2


def test_question_answering_mlflow_model_answers_with_a_span_of_the_context(tmp_path: Path) -> None:
    import mlflow.pyfunc
    import pandas as pd
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from ftc.runtime.outputs import save_mlflow_model
    from tests.runtime.tiny import FILLER, make_tiny_tokenizer

    tokenizer = make_tiny_tokenizer(tmp_path / "tok", model_max_length=64)
    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    ))
    info = {"max_seq_length": 24, "doc_stride": 8, "max_answer_length": 5}
    path = save_mlflow_model("question_answering", _Done(model), tokenizer, tmp_path / "out", info=info)
    assert path is not None
    long_context = " ".join(FILLER[:40])  # longer than 24 tokens: read in overlapping windows
    frame = pd.DataFrame({"question": ["where is the cat", "what"], "context": ["the cat sat on the mat", long_context]})
    answers = mlflow.pyfunc.load_model(str(path)).predict(frame)
    assert list(answers.columns) == ["answer", "score", "start", "end"]
    for (_, row), context in zip(answers.iterrows(), frame["context"]):
        assert row["answer"] and context[row["start"] : row["end"]] == row["answer"]
        assert len(row["answer"].split()) <= 5 and 0 < row["score"] <= 1


def test_a_task_without_an_mlflow_model_is_a_warning(tmp_path: Path, caplog) -> None:
    from ftc.runtime.outputs import save_mlflow_model

    with caplog.at_level("WARNING", logger="ftc.runtime"):
        assert save_mlflow_model("token_classification", _Done(None), None, tmp_path) is None
    assert "no MLflow model" in caplog.text and not (tmp_path / "mlflow_model_folder").exists()
