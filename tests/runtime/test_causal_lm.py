"""causal_lm end to end with a tiny Llama and a tiny GPT-2 built in code (no hub): chat and text data,
assistant-only labels, packing without cross-sample attention, padding, perplexity, bad data."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path

import pytest

from tests.runtime.conftest import run_module
from tests.runtime.tiny import write_jsonl
from tests.runtime.tiny_lm import (
    chat_rows,
    dialogue,
    make_lm_data,
    make_lm_tokenizer,
    make_tiny_gpt2,
    make_tiny_llama,
    text_rows,
)

# 800 chats packed into about 310 rows of 128 tokens (39 steps per epoch); 150 steps take the tiny
# Llama from perplexity about 310 to about 1.05 (it learns to copy who brings what on which day).
CHAT_SPEC = """\
task: causal_lm
model: ./models/llama
data:
  train_file_path: data/chat/train.jsonl
  validation_file_path: data/chat/validation.jsonl
  context_length: 128
training:
  max_steps: 150
  per_device_train_batch_size: 8
  per_device_eval_batch_size: 16
  seed: 0
optimizer:
  learning_rate: 0.003
  warmup_steps: 20
evaluation:
  evaluation_strategy: steps
  eval_steps: 50
  metric_for_best_model: perplexity
checkpointing:
  output_dir: out
  save_total_limit: 1
"""

# GPT-2 (absolute positions), text data, one sample per padded row.
TEXT_SPEC = """\
task: causal_lm
model: ./models/gpt2
data:
  train_file_path: data/text/train.jsonl
  validation_file_path: data/text/validation.jsonl
  max_seq_length: 128
  batching_strategy: padding
training:
  max_steps: 80
  per_device_train_batch_size: 16
  per_device_eval_batch_size: 32
  seed: 0
optimizer:
  learning_rate: 0.003
  warmup_steps: 10
evaluation:
  evaluation_strategy: "no"
checkpointing:
  output_dir: out
  save_as_mlflow_model: false
"""


@pytest.fixture(scope="session")
def lm_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm_models")
    make_tiny_llama(root / "llama")
    make_tiny_gpt2(root / "gpt2")
    return root


@pytest.fixture(scope="session")
def lm_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lm_data(tmp_path_factory.mktemp("lm_data"), n_train=800, n_val=64, seed=0)


@pytest.fixture
def project(tmp_path: Path, lm_models: Path, lm_data: Path) -> Path:
    """A spec folder with models/{llama,gpt2} and data/{chat,text}/; replaces conftest's project."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "models").symlink_to(lm_models, target_is_directory=True)
    (root / "data").symlink_to(lm_data, target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):  # -> fast tokenizer
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("lm_tok")
    make_lm_tokenizer(folder)
    return AutoTokenizer.from_pretrained(str(folder))


def _metrics(out: Path) -> dict[str, float]:
    return json.loads((out / "metrics.json").read_text())


def _tokens(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.convert_ids_to_tokens(i) if i != -100 else "_" for i in ids]


CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "summarize : bob : can you bring the cake on monday ?"},
    {"role": "assistant", "content": "alice brings the cake ."},
    {"role": "user", "content": "thanks"},
    {"role": "assistant", "content": "ok"},
]


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("tagged", [False, True], ids=["prefix-renders", "generation-tags"])
def test_chat_labels_are_the_assistant_turns_only(tmp_path: Path, tagged: bool) -> None:
    """Both ways of finding the assistant's tokens label exactly its replies and their <|im_end|>."""
    from transformers import AutoTokenizer

    from ftc.runtime.tasks.causal_lm import encode_chat, has_generation_tags

    make_lm_tokenizer(tmp_path, tagged=tagged)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert has_generation_tags(tok) is tagged
    ids, labels = encode_chat(tok, CONVERSATION, tagged)
    assert _tokens(tok, ids)[:3] == ["<s>", "<|im_start|>", "system"]  # the template's BOS, once
    assert len(ids) == len(labels) == 37
    learned = [t for t in _tokens(tok, labels) if t != "_"]
    assert learned == ["alice", "brings", "the", "cake", ".", "<|im_end|>", "ok", "<|im_end|>"]
    # Everything up to and including "<|im_start|> assistant" of the first reply has no label.
    first = labels.index(tok.convert_tokens_to_ids("alice"))
    assert _tokens(tok, ids)[first - 2 : first] == ["<|im_start|>", "assistant"]
    assert all(t == -100 for t in labels[:first])
    assert labels[first:][:6] == ids[first:][:6]


def test_text_samples_learn_every_token(tokenizer) -> None:
    from ftc.runtime.tasks.causal_lm import encode_text

    ids, labels = encode_text(tokenizer, "Alice brings the cake .")
    assert _tokens(tokenizer, ids) == ["<s>", "alice", "brings", "the", "cake", ".", "<|im_end|>"]  # BOS, EOS
    assert labels == ids


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer) -> None:
    """A render of the conversation's start that is not a prefix of the whole cannot be split into turns."""
    from ftc.runtime.tasks.causal_lm import assistant_spans

    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = (  # the last message is written differently from the earlier ones
        "{% for m in messages %}{% if loop.last %}<|im_start|>{{ m['role'] }} {{ m['content'] }} <|im_end|> "
        "{% else %}{{ m['role'] }} : {{ m['content'] }} . {% endif %}{% endfor %}"
    )
    with pytest.raises(ValueError, match="renders message 3 differently"):
        assistant_spans(tok, CONVERSATION)


# --------------------------------------------------------------------------- packing and batches


def test_pack_best_fit_decreasing() -> None:
    from ftc.runtime.tasks.causal_lm import pack

    lengths = [5, 3, 4, 2, 6, 1, 8, 3]
    rows = pack(lengths, 8)
    # Decreasing: 8 | 6 (+2) | 5 (+3) | 4 (+3, +1): every row full, each sample once.
    assert rows == [[6], [4, 3], [0, 1], [2, 7, 5]]
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert pack([3, 3, 3], 4) == [[0], [1], [2]]  # nothing fits beside a 3 in 4


def test_packed_rows_restart_positions_and_mask_each_first_label() -> None:
    from ftc.runtime.tasks.causal_lm import LMCollator, packed_columns

    samples = [([10, 11, 12], [10, 11, 12]), ([20, 21], [-100, 21]), ([30, 31, 32, 33], [-100, -100, 32, 33])]
    columns = packed_columns(samples, capacity=8)
    assert columns["input_ids"] == [[30, 31, 32, 33, 10, 11, 12], [20, 21]]
    assert columns["position_ids"] == [[0, 1, 2, 3, 0, 1, 2], [0, 1]]
    # The first token of every sample has no label: the last token of the previous one must not predict it.
    assert columns["labels"] == [[-100, -100, 32, 33, -100, 11, 12], [-100, 21]]

    features = [{k: v[i] for k, v in columns.items()} for i in range(2)]
    batch = LMCollator(pad_id=3, packed=True)(features)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention_mask: packed-sequence detection
    assert batch["input_ids"][1].tolist() == [20, 21, 3, 3, 3, 3, 3]
    assert batch["labels"][1].tolist() == [-100, 21, -100, -100, -100, -100, -100]
    assert batch["position_ids"][1].tolist() == [0, 1, 0, 1, 2, 3, 4]  # the padding is a sequence of its own
    flat = LMCollator(pad_id=3, packed=True, flatten=True)(features)  # flash attention: one row per batch
    assert flat["input_ids"].tolist() == [[30, 31, 32, 33, 10, 11, 12, 20, 21]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 0, 1]]


def test_padding_labels_padding_with_minus_100_even_when_pad_is_eos() -> None:
    """pad = EOS (3) here: the real EOS keeps its label, the padding gets -100 and attention_mask 0."""
    from ftc.runtime.tasks.causal_lm import LMCollator, padded_columns

    columns = padded_columns([([1, 5, 3], [1, 5, 3]), ([1, 6, 7, 8, 3], [-100, -100, 7, 8, 3])])
    features = [{k: v[i] for k, v in columns.items()} for i in range(2)]
    batch = LMCollator(pad_id=3, packed=False)(features)
    assert batch["input_ids"].tolist() == [[1, 5, 3, 3, 3], [1, 6, 7, 8, 3]]
    assert batch["labels"].tolist() == [[1, 5, 3, -100, -100], [-100, -100, 7, 8, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    wide = LMCollator(pad_id=3, packed=False, pad_to=8)(features)  # data.pad_to_max_length
    assert wide["input_ids"].shape == (2, 8) and wide["labels"][1, 5:].tolist() == [-100] * 3


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_packed_samples_have_the_logits_they_have_alone(lm_models: Path, tokenizer, family: str) -> None:
    """The proof of no cross-sample attention: each sample's logits inside a packed row equal its logits
    alone, and the loss of the packed row equals the loss of the same samples padded. Without the
    position_ids detection (an attention_mask of ones) the same row does leak."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftc.runtime.tasks.causal_lm import (
        LMCollator, encode_chat, encode_text, keeps_samples_apart, pack, packed_columns, padded_columns,
    )

    model = AutoModelForCausalLM.from_pretrained(str(lm_models / family)).eval()
    samples = [encode_chat(tokenizer, r["messages"], tagged=False) for r in chat_rows(3, seed=5)]
    samples += [encode_text(tokenizer, r["text"]) for r in text_rows(2, seed=5)]
    lengths = [len(ids) for ids, _ in samples]
    assert len(set(lengths)) > 1
    [order] = pack(lengths, sum(lengths))  # all five in one row, in this order
    columns = packed_columns(samples, capacity=sum(lengths))
    packed = LMCollator(tokenizer.eos_token_id, packed=True)([{k: v[0] for k, v in columns.items()}])
    with torch.no_grad():
        out = model(**packed, use_cache=False)
        leaky = model(input_ids=packed["input_ids"], attention_mask=torch.ones_like(packed["input_ids"]), use_cache=False)
    start = 0
    for j in order:
        ids = samples[j][0]
        assert packed["input_ids"][0, start : start + len(ids)].tolist() == ids
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
        assert (out.logits[0, start : start + len(ids)] - alone).abs().max().item() < 1e-4
        if start > 0:  # the test can fail: attending across samples changes the logits
            assert (leaky.logits[0, start : start + len(ids)] - alone).abs().max().item() > 1e-2
        start += len(ids)
    padded = padded_columns(samples)
    batch = LMCollator(tokenizer.eos_token_id, packed=False)([{k: v[i] for k, v in padded.items()} for i in range(5)])
    with torch.no_grad():
        assert model(**batch, use_cache=False).loss.item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert keeps_samples_apart(model)
    from peft import LoraConfig, get_peft_model

    from ftc.runtime.lora import default_target_modules

    targets = default_target_modules(model.config.model_type)
    assert keeps_samples_apart(get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", target_modules=targets)))


def test_a_model_that_mixes_packed_samples_falls_back_to_padding(compile_config, project: Path, caplog) -> None:
    """Mamba has no attention mask to separate samples (its state runs through the row): padding instead."""
    import torch
    from transformers import MambaConfig, MambaForCausalLM

    from ftc.runtime.config import load_config
    from ftc.runtime.tasks import get_task

    folder = project / "mamba"
    tok = make_lm_tokenizer(folder)
    torch.manual_seed(0)
    MambaForCausalLM(MambaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, state_size=4)).save_pretrained(
        str(folder)
    )
    cfg = load_config(compile_config(CHAT_SPEC.replace("./models/llama", "./mamba")))
    task = get_task("causal_lm")
    with caplog.at_level(logging.WARNING, logger="ftc.runtime"):
        prepared = task.prepare(cfg, task.load_data(cfg))
    assert prepared.info["batching_strategy"] == "padding"
    assert "lets packed samples attend to each other" in caplog.text
    assert "attention_mask" in prepared.data_collator([prepared.train_dataset[0]])
    # ...and the Llama does keep them apart: its run packs.
    cfg = load_config(compile_config(CHAT_SPEC))
    prepared = task.prepare(cfg, task.load_data(cfg))
    assert prepared.info["batching_strategy"] == "packing"
    assert prepared.info["train_rows"] < prepared.info["train_samples"] / 2


def test_long_samples_are_cut_and_conversations_without_a_reply_left_are_dropped(
    compile_config, project: Path, caplog
) -> None:
    import random

    from ftc.runtime.config import load_config
    from ftc.runtime.tasks import get_task

    def chat(filler: int, replies: int) -> dict:
        text, summary = dialogue(random.Random(filler), filler_turns=filler)
        return {"messages": [{"role": "user", "content": f"summarize : {text}"},
                             {"role": "assistant", "content": " ".join([summary] * replies)}]}

    # 34 tokens each; 55 (the reply cut, its start kept); 70 or more (the reply beyond 48 tokens: dropped).
    path = write_jsonl(project / "val.jsonl", [chat(0, 1)] * 5 + [chat(0, 4), chat(6, 1)])
    cfg = load_config(compile_config(CHAT_SPEC), [])
    cfg.spec.data.validation_file_path, cfg.spec.data.max_seq_length = str(path), 48
    task = get_task("causal_lm")
    with caplog.at_level(logging.WARNING, logger="ftc.runtime"):
        prepared = task.prepare(cfg, task.load_data(cfg))
    assert f"validation data file {path}: 2 of 7 samples are longer than 48 tokens" in caplog.text
    assert f"validation data file {path}: 1 samples have no assistant token within 48 tokens and were dropped" in caplog.text
    rows = prepared.eval_dataset
    assert sum(p.count(0) for p in rows["position_ids"]) == 6  # samples kept
    assert sorted(len(r) for r in rows["input_ids"]) == [34] * 5 + [48]  # two of 34 do not fit in 48


def test_perplexity_is_lower_is_better(compile_config, project: Path) -> None:
    from ftc.runtime.config import load_config
    from ftc.runtime.hf_trainer import add_perplexity
    from ftc.runtime.training_args import training_arguments_kwargs

    cfg = load_config(compile_config(CHAT_SPEC))
    assert cfg.derived["metric_greater_is_better"] is False
    kwargs = training_arguments_kwargs(cfg, n_train=100, has_eval=True, cuda=False)
    assert (kwargs["metric_for_best_model"], kwargs["greater_is_better"]) == ("eval_perplexity", False)
    metrics = {"test_loss": 2.0}
    add_perplexity(metrics, "test")
    assert metrics["test_perplexity"] == pytest.approx(math.exp(2.0))


# --------------------------------------------------------------------------- bad data fails before training


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "hi"}'], ":1: missing column 'messages' (chat messages) or 'text' (text) (columns: 'prompt')"),
        (['{"text": "hi"}', '{"prompt": "hi"}'], ":2: row has no column 'text'"),
        (['{"text": "hi"}', '{"text": "  "}'], ":2: text column 'text' is empty"),
        (['{"messages": "hi"}'], ":1: column 'messages' must hold a list of messages ({role, content} objects), not str"),
        (['{"messages": []}'], ":1: column 'messages' must hold a list of messages ({role, content} objects), not an empty list"),
        (['{"messages": [{"role": "user", "text": "hi"}]}'], ":1: column 'messages': message 1 must be an object with 'role' and 'content'"),
        (['{"messages": [{"role": "user", "content": ["hi"]}]}'], ":1: column 'messages': message 1 content must be text, not list"),
        (
            ['{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}',
             '{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}'],
            ":2: column 'messages' has no assistant message (roles: system, user): nothing to learn",
        ),
    ],
)
def test_bad_data_fails_before_training(compile_config, project: Path, run_inprocess, lines, message: str) -> None:
    path = project / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, _, err = run_inprocess(compile_config(CHAT_SPEC), "--validation_file_path", str(path))
    assert code == 1
    assert f"validation data file {path}{message}" in err
    assert "Traceback" not in err
    assert "Loading weights" not in err and not (project / "out" / "pytorch_model_folder").exists()


def test_an_empty_file_and_a_tokenizer_without_chat_template(compile_config, project: Path, run_inprocess) -> None:
    empty = project / "empty.jsonl"
    empty.write_text("")
    code, _, err = run_inprocess(compile_config(CHAT_SPEC), "--train_file_path", str(empty))
    assert code == 1 and f"train data file {empty} is empty" in err

    folder = project / "plain"
    make_tiny_llama(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    code, _, err = run_inprocess(compile_config(CHAT_SPEC), "--model_selector_output", str(folder))
    assert code == 1 and "the tokenizer has no chat template" in err and "Traceback" not in err


# --------------------------------------------------------------------------- learning for real


@pytest.mark.slow
def test_chat_llama_learns_with_packing_and_keeps_the_lowest_perplexity(
    compile_config, project: Path, tmp_path: Path
) -> None:
    """The real entry point in a fresh process; the saved model then summarizes dialogues it never saw."""
    config = compile_config(CHAT_SPEC)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    result = run_module(["--config", str(config), "--output_dir", "runs/lm", "--save_metrics", "true"], cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    out = cwd / "runs" / "lm"
    metrics = _metrics(out)
    before, after = metrics["initial_eval_perplexity"], metrics["eval_perplexity"]
    assert before > 100, metrics  # about the vocabulary size (292) at random
    assert after < 1.5 and after < before / 50, metrics
    assert after == pytest.approx(math.exp(metrics["eval_loss"]))
    assert f"validation perplexity before: {before:.4f}  after: {after:.4f}" in result.stdout
    assert "batching packing" in result.stderr and "Traceback" not in result.stderr
    # Evaluated every 50 steps; perplexity is lower-is-better, so the best checkpoint is the lowest.
    history = json.loads((out / "train_log_history.json").read_text())
    evals = {h["step"]: h["eval_perplexity"] for h in history if "eval_perplexity" in h and h["step"] > 0}
    assert sorted(evals) == [50, 100, 150]
    folder = out / "pytorch_model_folder"
    state = json.loads(next(folder.glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["best_metric"] == pytest.approx(min(evals.values()))
    info = json.loads((folder / "ftc_model_info.json").read_text())
    assert (info["batching_strategy"], info["data_format"], info["max_seq_length"]) == ("packing", "chat", 128)
    assert (out / "mlflow_model_folder" / "MLmodel").exists()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    right = 0
    for row in chat_rows(20, seed=777):
        prompt = tok.apply_chat_template(row["messages"][:1], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            ids = model.generate(**prompt, max_new_tokens=10, do_sample=False, eos_token_id=tok.eos_token_id)
        reply = tok.decode(ids[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
        right += " ".join(reply.split()) == row["messages"][1]["content"]
    assert right >= 16, right


@pytest.mark.slow
def test_text_gpt2_learns_with_padding(compile_config, project: Path, run_inprocess) -> None:
    code, out, err = run_inprocess(compile_config(TEXT_SPEC))
    assert code == 0, err
    metrics = _metrics(project / "out")
    assert metrics["eval_perplexity"] < metrics["initial_eval_perplexity"] / 10, metrics
    assert "validation perplexity before:" in out and "batching padding" in err
    info = json.loads((project / "out" / "pytorch_model_folder" / "ftc_model_info.json").read_text())
    assert (info["batching_strategy"], info["data_format"]) == ("padding", "text")


@pytest.mark.slow
def test_lora_adapter_is_a_causal_lm_adapter(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(
        compile_config(CHAT_SPEC), "--apply_lora", "true", "--merge_lora_weights", "false", "--lr", "0.01",
        "--max_steps", "40", "--evaluation_strategy", "no", "--save_as_mlflow_model", "false",
    )
    assert code == 0, err
    metrics = _metrics(project / "out")
    # LoRA on a random model (frozen random embeddings) learns slowly: about 312 -> 200 in 40 steps.
    assert metrics["eval_perplexity"] < 0.8 * metrics["initial_eval_perplexity"], metrics
    adapter = json.loads((project / "out" / "pytorch_model_folder" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM" and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]


@pytest.mark.slow
def test_gradient_accumulation_keeps_the_loss_scale(compile_config, project: Path, run_inprocess) -> None:
    """Causal LM losses divide by num_items_in_batch: 2 x 4 rows log the loss of 1 x 8, not half or twice it."""
    config = compile_config(CHAT_SPEC)
    logged = {}
    for ga, bs in ((1, 8), (2, 4)):
        code, _, err = run_inprocess(
            config, "--max_steps", "1", "--gradient_accumulation_steps", str(ga), "--per_device_train_batch_size",
            str(bs), "--logging_strategy", "steps", "--logging_steps", "1", "--save_metrics", "true",
            "--evaluation_strategy", "no", "--max_eval_steps", "1", "--save_as_mlflow_model", "false",
        )
        assert code == 0, err
        history = json.loads((project / "out" / "train_log_history.json").read_text())
        logged[ga] = next(h for h in history if "loss" in h)
    assert logged[2]["loss"] == pytest.approx(logged[1]["loss"], rel=0.05)
    assert logged[2]["grad_norm"] == pytest.approx(logged[1]["grad_norm"], rel=0.05)


@pytest.mark.slow
def test_mlflow_model_replies_as_the_trained_model_does(compile_config, project: Path, run_inprocess) -> None:
    """The MLflow model (transformers flavour, text-generation) loads offline and gives the trained model's
    greedy reply to a rendered chat prompt: the continuation only, no second BOS, the same every call (the
    pipeline alone would sample and repeat the prompt); params change the length per call."""
    import mlflow.pyfunc
    import torch
    import yaml
    from transformers import AutoModelForCausalLM, AutoTokenizer

    code, _, err = run_inprocess(compile_config(CHAT_SPEC), "--max_steps", "60", "--evaluation_strategy", "no")
    assert code == 0, err
    folder = project / "out" / "mlflow_model_folder"
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    assert mlmodel["flavors"]["transformers"]["task"] == "text-generation"
    generation = mlmodel["flavors"]["python_function"]["config"]  # what the pipeline is called with
    assert (generation["do_sample"], generation["return_full_text"], generation["add_special_tokens"]) == (False, False, False)
    trained = project / "out" / "pytorch_model_folder"
    tok = AutoTokenizer.from_pretrained(str(trained))
    model = AutoModelForCausalLM.from_pretrained(str(trained)).eval()

    rows = chat_rows(8, seed=777)
    prompts = [tok.apply_chat_template(r["messages"][:1], add_generation_prompt=True, tokenize=False) for r in rows]
    expected = []
    for prompt in prompts:
        enc = tok(prompt, add_special_tokens=False, return_tensors="pt")  # the template wrote the BOS
        assert enc["input_ids"][0].tolist().count(tok.bos_token_id) == 1
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=128, do_sample=False)
        expected.append(tok.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    loaded = mlflow.pyfunc.load_model(str(folder))
    replies = loaded.predict(prompts)
    assert replies == expected
    assert loaded.predict(prompts) == replies  # greedy: the same every call
    # It is the trained model: 60 steps teach the form of a summary (copying the names takes longer).
    assert all(re.fullmatch(r"[a-z]+ brings the [a-z]+ on [a-z]+day \.", " ".join(r.split())) for r in replies), replies
    short = loaded.predict(prompts[:2], params={"max_new_tokens": 2})
    assert [len(tok(s, add_special_tokens=False)["input_ids"]) for s in short] == [2, 2]
    assert [" ".join(r.split()[:2]) for r in replies[:2]] == short


# --------------------------------------------------------------------------- LLM defaults


def test_llm_defaults_reach_the_runtime(compile_config, project: Path, caplog) -> None:
    """causal_lm defaults: max_seq_length 4096 (quietly the model's 256 here), adamw_torch (fused on CUDA),
    evaluation batch = training batch, also when the command line changes the training batch."""
    from ftc.runtime.config import Override, load_config
    from ftc.runtime.tasks import get_task
    from ftc.runtime.training_args import optimizer_name, training_arguments_kwargs

    spec = CHAT_SPEC.replace("  context_length: 128\n", "").replace("  per_device_eval_batch_size: 16\n", "")
    config = compile_config(spec)
    cfg = load_config(config)
    assert cfg.spec.data.max_seq_length == 4096 and cfg.spec.training.per_device_eval_batch_size == 8
    kwargs = training_arguments_kwargs(cfg, n_train=100, has_eval=True, cuda=False)
    assert (kwargs["optim"], kwargs["per_device_eval_batch_size"]) == ("adamw_torch", 8)
    assert optimizer_name(cfg, cuda=True) == "adamw_torch_fused"
    assert optimizer_name(load_config(config, [Override("optim", "sgd")]), cuda=True) == "sgd"  # chosen: kept
    assert load_config(config, [Override("per_device_train_batch_size", "2")]).spec.training.per_device_eval_batch_size == 2
    given = load_config(config, [Override("per_device_train_batch_size", "2"), Override("per_device_eval_batch_size", "5")])
    assert given.spec.training.per_device_eval_batch_size == 5
    task = get_task("causal_lm")
    with caplog.at_level(logging.WARNING, logger="ftc.runtime"):
        prepared = task.prepare(cfg, task.load_data(cfg))
    assert prepared.info["max_seq_length"] == 256  # the tiny Llama's maximum, below 4096
    assert "more than the model takes" not in caplog.text
    cfg.spec.data.max_seq_length = 1000  # a value the spec gave is still warned about
    with caplog.at_level(logging.WARNING, logger="ftc.runtime"):
        assert task.prepare(cfg, task.load_data(cfg)).info["max_seq_length"] == 256
    assert "data.max_seq_length 1000 is more than the model takes; using 256" in caplog.text
