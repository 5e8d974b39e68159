"""Tiny decoder-only models and dialogue data with a learnable rule, built in code, for the causal_lm tests.

`make_lm_tokenizer(folder)` writes a fast WordLevel tokenizer with a ChatML-like chat template
("<s><|im_start|>user ... <|im_end|> <|im_start|>assistant ... <|im_end|> "): BOS "<s>" is
added to text, EOS is "<|im_end|>", and there is no pad token (the runtime pads with EOS).
`tagged=True` gives a template that marks the assistant's text with {% generation %}.
`make_tiny_llama(folder)` and `make_tiny_gpt2(folder)` write 2-layer random models with it.

The data, samsum-style: a dialogue in which one person asks another to bring something on a
day, and the other agrees; the summary is "<b> brings the <item> on <day> ." (copied from the
dialogue). `filler_turns` adds small talk of made-up words before it, for long-tailed lengths.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.runtime.tiny import FILLER, write_jsonl

LM_SPECIAL_TOKENS = ("<unk>", "<s>", "<|im_start|>", "<|im_end|>")
NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
ITEMS = ("cake", "salad", "bread", "wine", "chips", "cheese", "juice", "fruit")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
WORDS = (
    "can", "you", "bring", "the", "on", "yes", "sure", "ok", "i", "will", "it", "brings", "summarize", "summary",
    "dialogue", "system", "user", "assistant", "be", "brief", "thanks", "hi", ":", "?", ".",
)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)
TAGGED_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}"
    "<|im_start|>assistant {% generation %}{{ m['content'] }} <|im_end|>{% endgeneration %} "
    "{% else %}<|im_start|>{{ m['role'] }} {{ m['content'] }} <|im_end|> {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def lm_vocabulary() -> list[str]:
    return [*LM_SPECIAL_TOKENS, *sorted(set(NAMES) | set(ITEMS) | set(DAYS) | set(WORDS) | set(FILLER))]


def make_lm_tokenizer(folder: str | Path, *, tagged: bool = False, model_max_length: int = 256):  # -> fast tokenizer
    """A fast WordLevel tokenizer over `lm_vocabulary()` with a chat template, saved to `folder`."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(lm_vocabulary())}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|im_end|>", unk_token="<unk>",
        additional_special_tokens=["<|im_start|>"], model_max_length=model_max_length,
    )
    fast.chat_template = TAGGED_CHAT_TEMPLATE if tagged else CHAT_TEMPLATE
    fast.save_pretrained(str(folder))
    return fast


def make_tiny_llama(folder: str | Path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0,
                    tagged: bool = False) -> Path:
    """Write a tiny random LlamaForCausalLM and its tokenizer to `folder`; returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_lm_tokenizer(folder, tagged=tagged)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder


def make_tiny_gpt2(folder: str | Path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random GPT2LMHeadModel (absolute positions) and the same tokenizer to `folder`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_lm_tokenizer(folder)
    config = GPT2Config(
        vocab_size=len(tok), n_embd=hidden_size, n_layer=num_layers, n_head=4, n_positions=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder


def dialogue(rng: random.Random, filler_turns: int = 0) -> tuple[str, str]:
    """(dialogue, summary): b agrees to bring an item on a day; small talk before it."""
    a, b = rng.sample(NAMES, 2)
    item, day = rng.choice(ITEMS), rng.choice(DAYS)
    turns = []
    for _ in range(filler_turns):
        who = rng.choice((a, b))
        turns.append(f"{who} : " + " ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 8))) + " .")
    turns.append(f"{a} : can you bring the {item} on {day} ?")
    turns.append(f"{b} : {rng.choice(('yes', 'sure', 'ok'))} i will bring it .")
    return " ".join(turns), f"{b} brings the {item} on {day} ."


def _filler(rng: random.Random, long_tail: bool) -> int:
    """Small-talk turns: none to two, or (long_tail) mostly few and sometimes many."""
    if not long_tail:
        return rng.randint(0, 2)
    return rng.randint(8, 20) if rng.random() < 0.15 else rng.randint(0, 2)


def chat_rows(n: int, seed: int, long_tail: bool = False) -> list[dict[str, Any]]:
    """`n` rows {"messages": [user: summarize the dialogue, assistant: its summary]}."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        text, summary = dialogue(rng, _filler(rng, long_tail))
        rows.append({"messages": [{"role": "user", "content": f"summarize : {text}"},
                                  {"role": "assistant", "content": summary}]})
    return rows


def text_rows(n: int, seed: int) -> list[dict[str, str]]:
    """`n` rows {"text": "dialogue : ... summary : ..."}."""
    rng = random.Random(seed)
    return [{"text": f"dialogue : {t} summary : {s}"} for t, s in (dialogue(rng, rng.randint(0, 2)) for _ in range(n))]


def make_lm_data(folder: str | Path, n_train: int = 800, n_val: int = 64, seed: int = 0) -> Path:
    """chat/{train,validation}.jsonl and text/{train,validation}.jsonl under `folder`; returns it."""
    folder = Path(folder)
    write_jsonl(folder / "chat" / "train.jsonl", chat_rows(n_train, seed))
    write_jsonl(folder / "chat" / "validation.jsonl", chat_rows(n_val, seed + 10_000))
    write_jsonl(folder / "text" / "train.jsonl", text_rows(n_train, seed + 1))
    write_jsonl(folder / "text" / "validation.jsonl", text_rows(n_val, seed + 10_001))
    return folder
