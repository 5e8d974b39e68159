"""Translation and summarization end to end with a tiny T5 (and tiny mBARTs) built in code (no hub)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.runtime.conftest import run_module
from tests.runtime.tiny import write_jsonl
from tests.runtime.tiny_seq2seq import (
    DICTIONARY,
    make_seq2seq_data,
    make_t5_tokenizer,
    make_tiny_bart,
    make_tiny_mbart,
    make_tiny_t5,
    summarization_rows,
    translation_rows,
)

# 4000 training rows / 32 = 125 steps per epoch. The tiny T5 needs about 600 steps (12-15 s on two
# cores) to generalise the word-for-word rule to unseen sentences: BLEU 0 -> about 60.
TRANSLATION_SPEC = """\
task: translation
model: ./models/t5
data:
  train_file_path: data/translation/train.jsonl
  validation_file_path: data/translation/validation.jsonl
  source_lang: en
  target_lang: de
  max_seq_length: 32
training:
  max_steps: 600
  per_device_train_batch_size: 32
  per_device_eval_batch_size: 80
  seed: 0
optimizer:
  learning_rate: 0.003
  warmup_steps: 40
evaluation:
  evaluation_strategy: "no"
checkpointing:
  output_dir: out
"""

# Other column names; evaluation (by generation) every epoch, the best ROUGE-L kept.
SUMMARIZATION_SPEC = """\
task: summarization
model: ./models/t5
data:
  train_file_path: data/summarization/train.jsonl
  validation_file_path: data/summarization/validation.jsonl
  source_key: document
  target_key: summary
  max_seq_length: 32
training:
  max_steps: 500
  per_device_train_batch_size: 32
  per_device_eval_batch_size: 80
  seed: 0
optimizer:
  learning_rate: 0.003
  warmup_steps: 40
evaluation:
  evaluation_strategy: epoch
  metric_for_best_model: rougeL
checkpointing:
  output_dir: out
  save_total_limit: 1
"""

MBART_SPEC = """\
task: translation
model: ./models/{model}
data:
  train_file_path: data/translation/validation.jsonl
  source_lang: en_XX
  target_lang: de_DE
  max_seq_length: 32
training: {{max_steps: 2, per_device_train_batch_size: 8, per_device_eval_batch_size: 8}}
evaluation: {{evaluation_strategy: "no"}}
checkpointing: {{output_dir: out}}
"""


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_t5(tmp_path_factory.mktemp("t5") / "model")


@pytest.fixture(scope="session")
def seq2seq_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seq2seq_data")
    make_seq2seq_data(root / "translation", translation_rows(4080, seed=0), n_val=80)
    make_seq2seq_data(root / "summarization", summarization_rows(4080, seed=1), n_val=80)
    return root


@pytest.fixture
def project(tmp_path: Path, tiny_t5: Path, seq2seq_data: Path) -> Path:
    """A spec folder with models/t5 (the session's tiny T5) and data/{translation,summarization}/.

    It replaces conftest's classification project, so compile_config and run_inprocess work here.
    """
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    (root / "models" / "t5").symlink_to(tiny_t5, target_is_directory=True)
    (root / "data").symlink_to(seq2seq_data, target_is_directory=True)
    return root


def _metrics(out: Path) -> dict[str, float]:
    return json.loads((out / "metrics.json").read_text())


def _generate(model, tokenizer, sources: list[str], max_length: int):  # -> torch.Tensor
    """Greedy generation for `sources`."""
    import torch

    enc = tokenizer(sources, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.generate(**enc, max_length=max_length, num_beams=1, do_sample=False)


def _logits(model, tokenizer, sources: list[str], generated):  # -> torch.Tensor
    """The model's logits with the generated tokens as decoder input (teacher forcing)."""
    import torch

    labels = generated[:, 1:].clone()  # without the decoder start token
    labels[labels == tokenizer.pad_token_id] = -100
    with torch.no_grad():
        return model(**tokenizer(sources, padding=True, return_tensors="pt"), labels=labels).logits


# --------------------------------------------------------------------------- metrics by hand


def test_bleu_by_hand() -> None:
    from ftc.runtime.tasks.seq2seq import bleu, bleu_tokenizer

    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"])["bleu"] == pytest.approx(100.0)
    # Every n-gram of the hypothesis matches (precisions 6/6, 5/5, 4/4, 3/3); it is one word short
    # of the reference: brevity penalty exp(1 - 7/6).
    expected = 100 * math.exp(1 - 7 / 6)
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat today"])["bleu"] == pytest.approx(expected)
    # A corpus pools the counts: 1-grams 8/10, 2-grams 6/8, 3-grams 4/6, 4-grams 2/4, equal lengths (no
    # brevity penalty): the geometric mean of 0.8, 0.75, 2/3 and 0.5 is 0.2 ** (1/4).
    hyp = ["a b c d e", "f g h i j"]
    ref = ["a b c d x", "f g h i y"]
    assert bleu(hyp, ref)["bleu"] == pytest.approx(100 * 0.2**0.25)
    assert bleu([], [])["bleu"] == 0.0
    with pytest.raises(ValueError):
        bleu(["a"], [])
    assert bleu_tokenizer("zh_CN") == "zh" and bleu_tokenizer("de") == "13a" and bleu_tokenizer(None) == "13a"


def test_rouge_by_hand() -> None:
    from ftc.runtime.tasks.seq2seq import rouge, split_sentences

    scores = rouge(["the cat sat on the mat"], ["the cat is on the mat"])
    # 5 of 6 unigrams shared; bigrams the-cat, on-the, the-mat: 3 of 5; LCS "the cat on the mat": 5 of 6.
    assert scores == pytest.approx({"rouge1": 100 * 5 / 6, "rouge2": 60.0, "rougeL": 100 * 5 / 6, "rougeLsum": 100 * 5 / 6})
    # Porter stemming: cats ~ cat, sitting ~ sit.
    assert rouge(["cats sitting"], ["cat sit"])["rouge1"] == pytest.approx(100.0)
    # rougeLsum takes the union LCS per reference sentence, so the sentence order does not matter,
    # while rougeL over the whole text finds an LCS of 2 of 4 words.
    swapped = rouge(["a b. c d."], ["c d. a b."])
    assert swapped["rougeL"] == pytest.approx(50.0)
    assert swapped["rougeLsum"] == pytest.approx(100.0)
    assert split_sentences("One. Two! Three? four") == "One.\nTwo!\nThree?\nfour"
    # The mean over examples, in percent: one perfect and one disjoint pair.
    assert rouge(["a b", "c d"], ["a b", "e f"])["rouge1"] == pytest.approx(50.0)


def test_compute_metrics_decodes_generated_ids(tmp_path: Path) -> None:
    """-100 (label padding, padding between batches), pad and out-of-vocabulary ids are dropped."""
    import numpy as np
    from transformers.trainer_utils import EvalPrediction

    from ftc.runtime.tasks.seq2seq import Seq2SeqMetrics

    tok = make_t5_tokenizer(tmp_path)
    ids = {w: tok.convert_tokens_to_ids(w) for w in ("katze", "hund", "haus")}
    # Generated: decoder start (pad 0), tokens, eos 1, then padding; an id beyond the vocabulary.
    generated = np.array([[0, ids["katze"], ids["hund"], 1, 0], [0, ids["haus"], 1, -100, -100], [0, 10_000, ids["hund"], 1, 0]])
    labels = np.array([[ids["katze"], ids["hund"], 1, -100], [ids["haus"], ids["katze"], 1, -100], [ids["hund"], 1, -100, -100]])
    metrics = Seq2SeqMetrics(tok, "summarization")(EvalPrediction(predictions=generated, label_ids=labels))
    # Pair 1 exact; pair 2 "haus" vs "haus katze": P 1, R 1/2, F 2/3; pair 3 exact once 10000 is dropped.
    assert metrics["rouge1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 3)
    assert metrics["gen_len"] == pytest.approx((3 + 2 + 3) / 3)  # tokens + eos, not pad or the start token
    translation = Seq2SeqMetrics(tok, "translation")(EvalPrediction(predictions=generated, label_ids=labels))
    assert set(translation) == {"bleu", "gen_len"}


# --------------------------------------------------------------------------- prefixes and language codes


def test_source_prefixes() -> None:
    from types import SimpleNamespace

    from ftc.runtime.tasks.seq2seq import language_name, source_prefix

    t5 = SimpleNamespace(model_type="t5")
    assert source_prefix("summarization", t5, None, None) == "summarize: "
    assert source_prefix("translation", t5, "en", "de") == "translate English to German: "
    assert source_prefix("translation", t5, "en_XX", "ro_RO") == "translate English to Romanian: "
    assert source_prefix("translation", t5, None, None) == ""
    assert language_name("French") == "French" and language_name("xx") == "xx" and language_name("deu") == "German"
    # The model's own prefixes (the original T5 configs have them) come first; other families get none.
    own = SimpleNamespace(model_type="t5", task_specific_params={"translation_en_to_de": {"prefix": "en-de: "}})
    assert source_prefix("translation", own, "en", "de") == "en-de: "
    assert source_prefix("translation", own, "en", "fr") == "translate English to French: "
    assert source_prefix("summarization", SimpleNamespace(model_type="bart"), None, None) == ""
    assert source_prefix("translation", SimpleNamespace(model_type="mt5"), "en", "de") == ""


@pytest.mark.parametrize("many_to_many", [False, True], ids=["mbart-cc25", "mbart-50"])
def test_mbart_language_codes(compile_config, project: Path, many_to_many: bool) -> None:
    """The tokenizer marks sources and targets with the spec's codes; generation starts with the target's."""
    from ftc.runtime.config import load_config
    from ftc.runtime.tasks import get_task

    make_tiny_mbart(project / "models" / "mbart", many_to_many=many_to_many)
    cfg = load_config(compile_config(MBART_SPEC.format(model="mbart")))
    task = get_task("translation")
    prepared = task.prepare(cfg, task.load_data(cfg))
    tok, model = prepared.tokenizer, prepared.model
    en, de, eos = tok.convert_tokens_to_ids("en_XX"), tok.convert_tokens_to_ids("de_DE"), tok.eos_token_id
    row = prepared.train_dataset[0]
    assert prepared.info["source_prefix"] == ""  # no T5 prefix for mBART
    if many_to_many:  # mBART-50: "<lang> text </s>"; decoding starts with </s>, the language is forced next
        assert row["input_ids"][0] == en and row["input_ids"][-1] == eos
        assert row["labels"][0] == de and row["labels"][-1] == eos
        assert model.generation_config.forced_bos_token_id == de
        assert prepared.info["target_language_token"] == "forced_bos_token_id"
    else:  # mBART-cc25: "text </s> <lang>"; decoding starts with the target language
        assert row["input_ids"][-2:] == [eos, en]
        assert row["labels"][-2:] == [eos, de]
        assert model.config.decoder_start_token_id == de == model.generation_config.decoder_start_token_id
        assert prepared.info["target_language_token"] == "decoder_start_token_id"


def test_mbart_trains_and_saves_its_languages(compile_config, project: Path, run_inprocess) -> None:
    """Through the runtime: no validation file (a seeded split), generation with the language code."""
    make_tiny_mbart(project / "models" / "mbart")
    code, _, err = run_inprocess(compile_config(MBART_SPEC.format(model="mbart")))
    assert code == 0, err
    assert "holding out 8 of 80 training rows" in err
    folder = project / "out" / "pytorch_model_folder"
    info = json.loads((folder / "ftc_model_info.json").read_text())
    assert (info["source_lang"], info["target_lang"]) == ("en_XX", "de_DE")
    from transformers import AutoConfig, AutoTokenizer

    de = AutoTokenizer.from_pretrained(str(folder)).convert_tokens_to_ids("de_DE")
    assert AutoConfig.from_pretrained(str(folder)).decoder_start_token_id == de
    assert "eval_bleu" in _metrics(project / "out")


def test_bart_summarization_without_prefix_padded_to_max_length(compile_config, project: Path, run_inprocess) -> None:
    """Another family: no task prefix; pad_to_max_length pads every label row with -100, not pad ids."""
    from ftc.runtime.config import load_config
    from ftc.runtime.tasks import get_task

    make_tiny_bart(project / "models" / "bart")
    spec = SUMMARIZATION_SPEC.replace("./models/t5", "./models/bart")
    args = ("--pad_to_max_length", "true", "--max_seq_length", "16", "--max_steps", "2", "--evaluation_strategy", "no",
            "--max_eval_steps", "1", "--per_device_eval_batch_size", "8")
    code, _, err = run_inprocess(compile_config(spec), *args)
    assert code == 0, err
    metrics = _metrics(project / "out")
    assert {"eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_rougeLsum", "eval_gen_len"} <= set(metrics)
    info = json.loads((project / "out" / "pytorch_model_folder" / "ftc_model_info.json").read_text())
    assert info["source_prefix"] == ""

    cfg = load_config(project / "build" / "local" / "ftc.resolved.json", [])
    cfg.spec.data.pad_to_max_length, cfg.spec.data.max_seq_length = True, 16
    task = get_task("summarization")
    row = task.prepare(cfg, task.load_data(cfg)).train_dataset[0]
    assert len(row["input_ids"]) == len(row["labels"]) == 16
    assert row["labels"][3] == 1 and row["labels"][4:] == [-100] * 12  # 3 words, </s>, then -100


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--target_lang", ""), "set data.source_lang and data.target_lang"),
        (("--target_lang", "xx_YY"), "data.target_lang 'xx_YY' is not a language code of the tokenizer (it knows ar_AR"),
    ],
)
def test_mbart_needs_known_language_codes(compile_config, project: Path, run_inprocess, args, message: str) -> None:
    make_tiny_mbart(project / "models" / "mbart")
    code, _, err = run_inprocess(compile_config(MBART_SPEC.format(model="mbart")), *args)
    assert code == 1
    assert message in err and "Traceback" not in err


# --------------------------------------------------------------------------- learning for real


@pytest.mark.slow
def test_translation_learns_through_python_m(compile_config, project: Path, tmp_path: Path) -> None:
    """The real entry point in a fresh process: BLEU from 0 to well above; the saved model translates."""
    config = compile_config(TRANSLATION_SPEC)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    result = run_module(["--config", str(config), "--output_dir", "runs/tr"], cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    out = cwd / "runs" / "tr"
    metrics = _metrics(out)
    assert metrics["initial_eval_bleu"] < 5
    assert metrics["eval_bleu"] >= 30, metrics
    assert metrics["eval_bleu"] - metrics["initial_eval_bleu"] >= 25
    assert metrics["eval_loss"] < metrics["initial_eval_loss"] / 3
    assert {"eval_gen_len", "train_loss", "train_runtime"} <= set(metrics)
    line = next(x for x in result.stdout.splitlines() if x.startswith("validation bleu before:"))
    assert f"after: {metrics['eval_bleu']:.4f}" in line
    assert "Traceback" not in result.stderr

    # The saved model, its tokenizer and the prefix it was trained with (in its config and in the
    # model info) translate sentences it never saw.
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    from ftc.runtime.tasks.seq2seq import bleu

    folder = out / "pytorch_model_folder"
    info = json.loads((folder / "ftc_model_info.json").read_text())
    prefix = "translate English to German: "
    assert info["source_prefix"] == prefix
    assert AutoConfig.from_pretrained(str(folder)).task_specific_params["translation_en_to_de"]["prefix"] == prefix
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(folder)).eval()
    rows = translation_rows(40, seed=123)
    generated = _generate(model, tokenizer, [prefix + r["source"] for r in rows], info["generation_max_length"])
    predictions = tokenizer.batch_decode(generated, skip_special_tokens=True)
    assert bleu(predictions, [r["target"] for r in rows])["bleu"] >= 30


@pytest.mark.slow
def test_summarization_learns_and_keeps_the_best(compile_config, project: Path, run_inprocess) -> None:
    code, out, err = run_inprocess(compile_config(SUMMARIZATION_SPEC), "--save_metrics", "true")
    assert code == 0, err
    metrics = _metrics(project / "out")
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert metrics[f"initial_eval_{name}"] < 10, metrics
    assert metrics["eval_rouge1"] >= 70 and metrics["eval_rougeL"] >= 60, metrics
    assert metrics["eval_rougeL"] - metrics["initial_eval_rougeL"] >= 50
    assert "validation rougeL before:" in out
    # Evaluated by generation after every epoch; the best ROUGE-L checkpoint is the final model.
    history = json.loads((project / "out" / "train_log_history.json").read_text())
    evals = [h for h in history if "eval_rougeL" in h and h["step"] > 0]  # not the evaluation before training
    assert [h["step"] for h in evals][:4] == [125, 250, 375, 500]
    state = json.loads(next((project / "out" / "pytorch_model_folder").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["best_metric"] == pytest.approx(max(h["eval_rougeL"] for h in evals))
    assert metrics["eval_rougeL"] == pytest.approx(state["best_metric"])
    info = json.loads((project / "out" / "pytorch_model_folder" / "ftc_model_info.json").read_text())
    assert info["source_prefix"] == "summarize: "
    assert info["generation_max_length"] == 5  # 3 words + </s> + the decoder start token


@pytest.mark.slow
def test_gradient_accumulation_keeps_the_loss_scale(compile_config, project: Path, run_inprocess) -> None:
    """T5's loss is a token mean that ignores num_items_in_batch: 2 x 16 logs the loss of 1 x 32, not twice it."""
    config = compile_config(TRANSLATION_SPEC)
    logged = {}
    for ga, bs in ((1, 32), (2, 16)):
        code, _, err = run_inprocess(
            config, "--max_steps", "1", "--gradient_accumulation_steps", str(ga), "--per_device_train_batch_size",
            str(bs), "--logging_strategy", "steps", "--logging_steps", "1", "--save_metrics", "true",
            "--max_eval_steps", "1", "--per_device_eval_batch_size", "8",
        )
        assert code == 0, err
        history = json.loads((project / "out" / "train_log_history.json").read_text())
        logged[ga] = next(h for h in history if "loss" in h)
    assert logged[2]["loss"] == pytest.approx(logged[1]["loss"], rel=0.1)  # about 6.3 both, not 12.6
    assert logged[2]["grad_norm"] == pytest.approx(logged[1]["grad_norm"], rel=0.3)


@pytest.mark.slow
def test_lora_merged_and_adapter_generate_the_same(compile_config, project: Path, run_inprocess) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    config = compile_config(TRANSLATION_SPEC)
    common = ("--apply_lora", "true", "--lr", "0.01", "--max_steps", "30", "--lora_r", "8",
              "--max_eval_steps", "1", "--per_device_eval_batch_size", "16")
    for merge, name in (("true", "merged"), ("false", "adapter")):
        code, _, err = run_inprocess(config, *common, "--merge_lora_weights", merge, "--output_dir", str(project / name))
        assert code == 0, err
    merged_dir = project / "merged" / "pytorch_model_folder"
    adapter_dir = project / "adapter" / "pytorch_model_folder"
    assert (merged_dir / "model.safetensors").exists() and not (merged_dir / "adapter_config.json").exists()
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "SEQ_2_SEQ_LM"
    assert sorted(adapter_config["target_modules"]) == ["q", "v"]  # T5's default

    info = json.loads((merged_dir / "ftc_model_info.json").read_text())
    sources = [info["source_prefix"] + r["source"] for r in translation_rows(24, seed=7)]
    tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    length = info["generation_max_length"]
    merged = AutoModelForSeq2SeqLM.from_pretrained(str(merged_dir)).eval()
    base = AutoModelForSeq2SeqLM.from_pretrained(str(project / "models" / "t5"))
    adapter = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    ids_merged = _generate(merged, tokenizer, sources, length)
    ids_adapter = _generate(adapter, tokenizer, sources, length)
    assert torch.equal(ids_merged, ids_adapter)
    logits_merged = _logits(merged, tokenizer, sources, ids_merged)
    assert (logits_merged - _logits(adapter, tokenizer, sources, ids_merged)).abs().max().item() < 1e-4
    # ...and LoRA changed the model: the untrained base scores the same outputs otherwise.
    untrained = AutoModelForSeq2SeqLM.from_pretrained(str(project / "models" / "t5")).eval()
    assert (logits_merged - _logits(untrained, tokenizer, sources, ids_merged)).abs().max().item() > 1e-2


# --------------------------------------------------------------------------- bad data fails before training


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"source": "cat", "target": "katze"}', '{"source": "dog"}'], ":2: row has no column 'target'"),
        (['{"text": "cat", "target": "katze"}'], ":1: missing column 'source' (columns: 'text', 'target')"),
        (['{"source": "cat", "target": "katze"}', '{"source": "dog", "target": "  "}'], ":2: target column 'target' is empty"),
        (['{"source": "", "target": "katze"}'], ":1: source column 'source' is empty"),
        (['{"source": "cat", "target": null}'], ":1: column 'target' is empty"),
        (['{"source": "cat", "target": ["katze"]}'], ":1: target column 'target' must hold text, not list"),
    ],
)
def test_bad_data_fails_before_training(compile_config, project: Path, run_inprocess, lines, message: str) -> None:
    path = project / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = run_inprocess(compile_config(TRANSLATION_SPEC), "--validation_file_path", str(path))
    assert code == 1
    assert f"validation data file {path}{message}" in err
    assert "Traceback" not in err
    assert not (project / "out" / "pytorch_model_folder").exists()
    assert message in (project / "out" / "ftc_runtime.log").read_text()


def test_a_classification_model_is_refused_clearly(compile_config, project: Path, run_inprocess, tiny_model: Path) -> None:
    (project / "models" / "bert").symlink_to(tiny_model, target_is_directory=True)
    code, _, err = run_inprocess(compile_config(TRANSLATION_SPEC), "--model_selector_output", str(project / "models" / "bert"))
    assert code == 1
    assert f"cannot load the model from folder {project / 'models' / 'bert'}" in err
    assert "Traceback" not in err


def test_long_targets_are_truncated_with_a_warning(compile_config, project: Path, run_inprocess) -> None:
    words = " ".join(list(DICTIONARY)[:20])
    rows = [{"source": words, "target": " ".join(DICTIONARY[w] for w in words.split())}] * 4
    path = write_jsonl(project / "long.jsonl", rows)
    code, _, err = run_inprocess(
        compile_config(TRANSLATION_SPEC), "--validation_file_path", str(path), "--max_seq_length", "8",
        "--max_steps", "1", "--per_device_eval_batch_size", "4",
    )
    assert code == 0, err
    assert f"validation data file {path}: 4 of 4 targets are longer than 8 tokens" in err
    info = json.loads((project / "out" / "pytorch_model_folder" / "ftc_model_info.json").read_text())
    assert info["generation_max_length"] == 9  # 8 target tokens + the decoder start
