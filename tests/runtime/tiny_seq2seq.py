"""A tiny T5 and seq2seq data with learnable rules, built in code, for the seq2seq runtime tests.

`make_tiny_t5(folder)` writes a 2-layer T5ForConditionalGeneration (d_model 64) and a T5-style
fast WordLevel tokenizer (`<pad>` 0 = decoder start, `</s>` 1 appended to every sequence,
`<unk>` 2) trained with `tokenizers` on `vocabulary()`.

The data:
- translation: English words from `DICTIONARY` in random order; the "German" target maps each
  word through the dictionary, same order (a word-for-word rule a tiny model learns in a few
  hundred steps);
- summarization: a run of filler words; the summary is its first `SUMMARY_WORDS` words.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from tests.runtime.tiny import FILLER, write_jsonl

T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")

# English -> "German", word for word.
DICTIONARY: dict[str, str] = {
    "cat": "katze", "dog": "hund", "house": "haus", "tree": "baum", "water": "wasser", "bread": "brot",
    "apple": "apfel", "book": "buch", "car": "auto", "city": "stadt", "child": "kind", "woman": "frau",
    "man": "mann", "day": "tag", "night": "nacht", "sun": "sonne", "moon": "mond", "star": "stern",
    "red": "rot", "green": "gruen", "blue": "blau", "small": "klein", "big": "gross", "old": "alt",
    "new": "neu", "good": "gut", "bad": "schlecht", "fast": "schnell", "slow": "langsam", "and": "und",
    "sees": "sieht", "eats": "isst", "has": "hat", "finds": "findet", "loves": "liebt", "reads": "liest",
}
SOURCE_WORDS = tuple(DICTIONARY)
SUMMARY_WORDS = 3
# The words of the T5 task prefixes the runtime adds ("translate English to German: ", "summarize: ").
PREFIX_WORDS = ("translate", "english", "to", "german", "summarize", ":")


def vocabulary() -> list[str]:
    """Special tokens, then the words of the dictionary (both languages), task prefixes and filler."""
    words = sorted(set(DICTIONARY) | set(DICTIONARY.values()) | set(PREFIX_WORDS) | set(FILLER))
    return [*T5_SPECIAL_TOKENS, *words]


def make_t5_tokenizer(folder: str | Path, model_max_length: int = 64):  # -> PreTrainedTokenizerFast
    """A T5-style fast WordLevel tokenizer over `vocabulary()`, saved to `folder`."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = WordLevelTrainer(special_tokens=list(T5_SPECIAL_TOKENS), min_frequency=1, show_progress=False)
    tok.train_from_iterator([" ".join(vocabulary()[len(T5_SPECIAL_TOKENS) :])], trainer=trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", eos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=model_max_length
    )
    assert (fast.pad_token_id, fast.eos_token_id, fast.unk_token_id) == (0, 1, 2)
    fast.save_pretrained(str(folder))
    return fast


def make_tiny_t5(
    folder: str | Path, *, d_model: int = 64, num_layers: int = 2, num_heads: int = 4, seed: int = 0
) -> Path:
    """Write a tiny random T5ForConditionalGeneration and its tokenizer to `folder`; returns it."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = make_t5_tokenizer(folder)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=2 * d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    model.save_pretrained(str(folder))
    return folder


def translate(sentence: str) -> str:
    """The rule of the translation data: word for word through DICTIONARY."""
    return " ".join(DICTIONARY[w] for w in sentence.split())


def translation_rows(n: int, seed: int, length: tuple[int, int] = (3, 6)) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        source = " ".join(rng.choice(SOURCE_WORDS) for _ in range(rng.randint(*length)))
        rows.append({"source": source, "target": translate(source)})
    return rows


def summarize(text: str) -> str:
    """The rule of the summarization data: the first SUMMARY_WORDS words."""
    return " ".join(text.split()[:SUMMARY_WORDS])


def summarization_rows(n: int, seed: int, length: tuple[int, int] = (6, 10)) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        text = " ".join(rng.choice(FILLER[:60]) for _ in range(rng.randint(*length)))
        rows.append({"document": text, "summary": summarize(text)})
    return rows


def make_seq2seq_data(folder: str | Path, rows: Sequence[dict], n_val: int) -> tuple[Path, Path]:
    """Write the first rows but n_val to train.jsonl, the last n_val to validation.jsonl."""
    folder = Path(folder)
    return (
        write_jsonl(folder / "train.jsonl", rows[:-n_val]),
        write_jsonl(folder / "validation.jsonl", rows[-n_val:]),
    )


def _bart_sizes(d_model: int) -> dict[str, int]:
    """The sizes of the tiny BART-family models: one layer each side, two heads, 64 positions."""
    return {
        "d_model": d_model,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 2 * d_model,
        "decoder_ffn_dim": 2 * d_model,
        "max_position_embeddings": 64,
    }


def make_tiny_mbart(folder: str | Path, *, many_to_many: bool = False, d_model: int = 32, seed: int = 0) -> Path:
    """A tiny random MBartForConditionalGeneration with an mBART tokenizer over the dictionary's words.

    many_to_many=False: the mBART-cc25 tokenizer ("text </s> <lang>", decoding starts with the
    target language); True: the mBART-50 one ("<lang> text </s>", the language forced first).
    """
    import torch
    from transformers import MBart50Tokenizer, MBartConfig, MBartForConditionalGeneration, MBartTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{w}", -1.0) for w in sorted(set(DICTIONARY) | set(DICTIONARY.values()))]
    cls = MBart50Tokenizer if many_to_many else MBartTokenizer
    tokenizer = cls(vocab=pieces, model_max_length=64)
    tokenizer.save_pretrained(str(folder))
    config = MBartConfig(
        vocab_size=len(tokenizer),
        **_bart_sizes(d_model),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id if many_to_many else None,
    )
    torch.manual_seed(seed)
    MBartForConditionalGeneration(config).save_pretrained(str(folder))
    return folder


def make_tiny_bart(folder: str | Path, *, d_model: int = 32, seed: int = 0) -> Path:
    """A tiny random BartForConditionalGeneration with the T5-style word tokenizer (</s> starts decoding)."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = make_t5_tokenizer(folder)
    eos = tokenizer.eos_token_id
    config = BartConfig(
        vocab_size=len(tokenizer),
        **_bart_sizes(d_model),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=eos,
        eos_token_id=eos,
        decoder_start_token_id=eos,
        forced_eos_token_id=eos,
    )
    torch.manual_seed(seed)
    BartForConditionalGeneration(config).save_pretrained(str(folder))
    return folder
