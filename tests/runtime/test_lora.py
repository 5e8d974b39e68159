"""LoRA settings of the spec (lora.*) reach peft and change the model: rank, alpha, dropout, bias,
modules_to_save, target_modules, init_lora_weights, and the default target modules of every model
family the runtime lists, each checked on a tiny model of that family built in code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftc.runtime.config import Override, load_config

# The attention projections LoRA adapts by default, per model family (peft's table or ftc's fallback).
FAMILY_DEFAULTS: dict[str, list[str]] = {
    "gpt2": ["c_attn"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "camembert": ["query", "value"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "distilbert": ["q_lin", "v_lin"],
    "t5": ["q", "v"],
    "bart": ["q_proj", "v_proj"],
    "mbart": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
}
VOCAB = 64


def _tiny_model(family: str):  # -> (model, peft task type)
    """A random model of `family` with 1 layer and hidden size 16, with the head its ftc task uses."""
    import torch
    import transformers as T

    enc = {"vocab_size": VOCAB, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    s2s = {"vocab_size": VOCAB, "d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
           "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "max_position_embeddings": 32}
    dec = {"vocab_size": VOCAB, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 32}
    builders = {
        "gpt2": (T.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=32, bos_token_id=0,
                              eos_token_id=0), T.GPT2LMHeadModel, "CAUSAL_LM"),
        "bert": (T.BertConfig(**enc, max_position_embeddings=32), T.BertForSequenceClassification, "SEQ_CLS"),
        "roberta": (T.RobertaConfig(**enc, max_position_embeddings=40), T.RobertaForSequenceClassification, "SEQ_CLS"),
        "camembert": (T.CamembertConfig(**enc, max_position_embeddings=40), T.CamembertForSequenceClassification,
                      "SEQ_CLS"),
        "deberta": (T.DebertaConfig(**enc, max_position_embeddings=32), T.DebertaForSequenceClassification, "SEQ_CLS"),
        "deberta-v2": (T.DebertaV2Config(**enc, max_position_embeddings=32), T.DebertaV2ForSequenceClassification,
                       "SEQ_CLS"),
        "distilbert": (T.DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=1, n_heads=2, hidden_dim=32,
                                          max_position_embeddings=32), T.DistilBertForSequenceClassification, "SEQ_CLS"),
        "t5": (T.T5Config(vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2),
               T.T5ForConditionalGeneration, "SEQ_2_SEQ_LM"),
        "bart": (T.BartConfig(**s2s), T.BartForConditionalGeneration, "SEQ_2_SEQ_LM"),
        "mbart": (T.MBartConfig(**s2s), T.MBartForConditionalGeneration, "SEQ_2_SEQ_LM"),
        "llama": (T.LlamaConfig(**dec), T.LlamaForCausalLM, "CAUSAL_LM"),
        "mistral": (T.MistralConfig(**dec), T.MistralForCausalLM, "CAUSAL_LM"),
        "qwen2": (T.Qwen2Config(**dec), T.Qwen2ForCausalLM, "CAUSAL_LM"),
    }
    config, cls, task_type = builders[family]
    torch.manual_seed(0)
    return cls(config), task_type


def _cfg(compile_config, *overrides: tuple[str, str]):
    return load_config(compile_config(), [Override("apply_lora", "true"), *(Override(k, v) for k, v in overrides)])


def _bert(tiny_model: Path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(str(tiny_model))  # its saved 2-label head


def _lora_layers(peft_model) -> dict[str, object]:
    """Module name -> LoRA layer, for every module peft adapted."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)}


def _trainable(peft_model) -> set[str]:
    return {n for n, p in peft_model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------- the settings


def test_peft_config_has_the_spec_settings(compile_config) -> None:
    from ftc.runtime.lora import peft_config

    cfg = _cfg(compile_config, ("lora_r", "4"), ("lora_alpha", "16"), ("lora_dropout", "0.2"), ("bias", "lora_only"),
               ("target_modules", "query,key"), ("modules_to_save", "pooler"), ("init_lora_weights", "false"))
    config = peft_config(cfg, "bert", "SEQ_CLS")
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (4, 16, 0.2, "lora_only")
    assert set(config.target_modules) == {"query", "key"}
    assert config.modules_to_save == ["pooler"] and config.init_lora_weights is False
    assert str(config.task_type) in ("SEQ_CLS", "TaskType.SEQ_CLS")
    # The defaults: rank 8, alpha 128, no dropout for text classification; the family's targets.
    default = peft_config(_cfg(compile_config), "bert", "SEQ_CLS")
    assert (default.r, default.lora_alpha, default.lora_dropout, default.bias) == (8, 128, 0.0, "none")
    assert set(default.target_modules) == {"query", "value"} and default.modules_to_save is None


def test_causal_lm_has_its_own_alpha_and_dropout_defaults(compile_config) -> None:
    from ftc.runtime.lora import peft_config

    spec = "task: causal_lm\nmodel: ./models/tiny\ndata:\n  train_file_path: data/train.jsonl\n"
    cfg = load_config(compile_config(spec), [Override("apply_lora", "true")])
    config = peft_config(cfg, "llama", "CAUSAL_LM")
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 32, 0.05)


def test_rank_alpha_and_dropout_shape_the_lora_layers(compile_config, tiny_model: Path) -> None:
    import torch

    from ftc.runtime.lora import apply_peft

    shapes = {}
    for r, alpha, dropout in ((4, 16, 0.25), (2, 6, 0.0)):
        cfg = _cfg(compile_config, ("lora_r", str(r)), ("lora_alpha", str(alpha)), ("lora_dropout", str(dropout)))
        layers = _lora_layers(apply_peft(_bert(tiny_model), cfg, "SEQ_CLS"))
        assert layers and {n.rsplit(".", 1)[-1] for n in layers} == {"query", "value"}
        for layer in layers.values():
            assert layer.r["default"] == r
            assert layer.lora_A["default"].weight.shape == (r, 64)  # hidden size 64
            assert layer.lora_B["default"].weight.shape == (64, r)
            assert layer.scaling["default"] == pytest.approx(alpha / r)
            drop = layer.lora_dropout["default"]
            if dropout:
                assert isinstance(drop, torch.nn.Dropout) and drop.p == pytest.approx(dropout)
            else:
                assert isinstance(drop, torch.nn.Identity)
        shapes[r] = sum(p.numel() for n, p in layers.items() for p in p.parameters() if p.requires_grad)
    assert shapes[4] == 2 * shapes[2]  # the adapter's size is linear in the rank


@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_bias_decides_which_biases_train(compile_config, tiny_model: Path, bias: str) -> None:
    from ftc.runtime.lora import apply_peft

    model = apply_peft(_bert(tiny_model), _cfg(compile_config, ("bias", bias)), "SEQ_CLS")
    trainable = _trainable(model)
    biases = {n for n in trainable if n.endswith(".bias") and ".modules_to_save." not in n}  # the head trains anyway
    targeted = {n for n in biases if n.endswith((".query.base_layer.bias", ".value.base_layer.bias"))}
    assert any(".lora_A." in n for n in trainable)
    every_bias = {n for n, _ in model.named_parameters() if n.endswith(".bias") and "classifier" not in n}
    if bias == "none":
        assert biases == set()
    elif bias == "lora_only":  # the biases of the adapted layers, and no other
        assert biases == targeted and len(targeted) == 4  # query and value of 2 layers
    else:  # all: every bias of the model, layer norms and the feed-forward layers too
        # 8 per layer (q, k, v, 2 layer norms, 3 dense), the embeddings' layer norm and the pooler
        assert biases == every_bias and len(biases) == 18 and any("LayerNorm" in n for n in biases)
    assert not any(n.endswith(".weight") and ".lora_" not in n and "classifier" not in n for n in trainable)


def test_target_modules_replace_the_family_default(compile_config, tiny_model: Path) -> None:
    from ftc.runtime.lora import apply_peft

    model = apply_peft(_bert(tiny_model), _cfg(compile_config, ("target_modules", "key,intermediate.dense")), "SEQ_CLS")
    names = set(_lora_layers(model))
    assert {n.split(".layer.")[-1].split(".", 1)[-1] for n in names} == {"attention.self.key", "intermediate.dense"}
    assert len(names) == 4
    assert not any(n.endswith((".query", ".value")) for n in names)


def test_target_modules_the_model_lacks_are_a_clear_error(compile_config, tiny_model: Path) -> None:
    """What a wrong family default would do: peft refuses, and the runtime says why."""
    from ftc.runtime.errors import RuntimeUserError
    from ftc.runtime.lora import apply_peft

    with pytest.raises(RuntimeUserError, match="cannot apply lora: ") as caught:
        apply_peft(_bert(tiny_model), _cfg(compile_config, ("target_modules", "q_proj,v_proj")), "SEQ_CLS")
    assert str(caught.value).endswith(
        "(lora.target_modules: q_proj, v_proj; the linear layers of this bert model: classifier, dense, key, query, value)"
    )


def test_init_lora_weights_false_starts_away_from_the_base_model(compile_config, tiny_model: Path) -> None:
    import torch

    from ftc.runtime.lora import apply_peft

    ids = torch.tensor([[2, 10, 11, 12, 3]])
    base = _bert(tiny_model).eval()
    with torch.no_grad():
        expected = base(input_ids=ids).logits
    outputs = {}
    for init in ("true", "false"):
        model = apply_peft(_bert(tiny_model), _cfg(compile_config, ("init_lora_weights", init)), "SEQ_CLS").eval()
        layer = next(iter(_lora_layers(model).values()))
        assert bool(layer.lora_B["default"].weight.abs().sum() == 0) is (init == "true")
        with torch.no_grad():
            outputs[init] = model(input_ids=ids).logits
    assert torch.allclose(outputs["true"], expected, atol=1e-6)  # an identity at the start: the base model
    assert not torch.allclose(outputs["false"], expected, atol=1e-3)


def test_modules_to_save_train_in_full_and_are_saved_with_the_adapter(
    compile_config, project: Path, tiny_model: Path, run_inprocess
) -> None:
    """The pooler (not a module peft saves on its own, unlike the classifier head) trains in full and is
    in adapter_model.safetensors, with its trained weights."""
    import torch
    from safetensors.torch import load_file

    from ftc.runtime.lora import apply_peft

    cfg = _cfg(compile_config, ("modules_to_save", "pooler"))
    trainable = _trainable(apply_peft(_bert(tiny_model), cfg, "SEQ_CLS"))
    assert {n for n in trainable if ".pooler." in n} == {
        "base_model.model.bert.pooler.modules_to_save.default.dense.weight",
        "base_model.model.bert.pooler.modules_to_save.default.dense.bias",
    }
    without = _trainable(apply_peft(_bert(tiny_model), _cfg(compile_config), "SEQ_CLS"))
    assert not any(".pooler." in n for n in without)

    code, _, err = run_inprocess(
        compile_config(), "--apply_lora", "true", "--modules_to_save", "pooler", "--merge_lora_weights", "false",
        "--max_steps", "3", "--lr", "0.01", "--evaluation_strategy", "no", "--save_as_mlflow_model", "false",
    )
    assert code == 0, err
    folder = project / "out" / "pytorch_model_folder"
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert "pooler" in adapter["modules_to_save"]
    saved = load_file(str(folder / "adapter_model.safetensors"))
    pooler = {k: v for k, v in saved.items() if ".pooler." in k}
    assert set(pooler) == {"base_model.model.bert.pooler.dense.weight", "base_model.model.bert.pooler.dense.bias"}
    base = _bert(tiny_model).bert.pooler.dense.weight
    assert not torch.allclose(pooler["base_model.model.bert.pooler.dense.weight"], base)  # trained, not a copy


# --------------------------------------------------------------------------- family defaults


def test_every_family_the_runtime_lists_is_tested() -> None:
    from ftc.runtime.lora import FALLBACK_TARGET_MODULES, default_target_modules

    assert set(FALLBACK_TARGET_MODULES) <= set(FAMILY_DEFAULTS)
    for family, expected in FAMILY_DEFAULTS.items():
        assert default_target_modules(family) == expected, family
    assert default_target_modules("no-such-family") is None


@pytest.mark.parametrize("family", sorted(FAMILY_DEFAULTS))
def test_the_family_default_targets_exist_in_a_model_of_that_family(compile_config, family: str) -> None:
    from ftc.runtime.lora import apply_peft

    model, task_type = _tiny_model(family)
    assert model.config.model_type == family
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    expected = FAMILY_DEFAULTS[family]
    assert set(expected) <= leaves, f"{family} has no {set(expected) - leaves}"
    peft_model = apply_peft(model, _cfg(compile_config), task_type)
    adapted = _lora_layers(peft_model)
    assert {name.rsplit(".", 1)[-1] for name in adapted} == set(expected)
    assert set(peft_model.peft_config["default"].target_modules) == set(expected)
    # Every module of those names is adapted (both blocks of an encoder-decoder, every layer).
    assert len(adapted) == sum(1 for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in expected)


def test_an_unknown_family_needs_target_modules(compile_config) -> None:
    from ftc.runtime.errors import RuntimeUserError
    from ftc.runtime.lora import peft_config

    with pytest.raises(RuntimeUserError, match="no default LoRA target_modules for model type 'mamba'; set lora.target_modules"):
        peft_config(_cfg(compile_config), "mamba", "CAUSAL_LM")
    assert set(peft_config(_cfg(compile_config, ("target_modules", "in_proj")), "mamba", "CAUSAL_LM").target_modules) == {
        "in_proj"
    }
