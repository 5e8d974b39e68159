"""A tiny BERT question-answering model and SQuAD-style data with a learnable rule, built in code.

`make_tiny_qa_model(folder)` writes a 2-layer BertForQuestionAnswering (hidden 64) and a fast
WordLevel tokenizer over `vocabulary()` (special tokens, filler words, marker words, question
words) into `folder`.

The data (`qa_rows`): a context is a run of filler words ("kabo dume ..."); in an answerable
example one marker word (an animal of `tiny.KEYWORDS`) stands in it, and the answer is the filler
word right after it. The question names the marker: "what comes after cat ?". An unanswerable
example's context holds no marker at all (answers {"text": [], "answer_start": []}).
"""

from __future__ import annotations

import random
from pathlib import Path

from tests.runtime.tiny import FILLER, KEYWORDS, SPECIAL_TOKENS

MARKERS = KEYWORDS["animal"]
QUESTION_WORDS = ("what", "comes", "after", "?")


def vocabulary() -> list[str]:
    return [*SPECIAL_TOKENS, *sorted(set(FILLER) | set(MARKERS) | set(QUESTION_WORDS))]


def make_qa_tokenizer(folder: str | Path, model_max_length: int = 64):  # -> PreTrainedTokenizerFast
    """A BERT-style fast WordLevel tokenizer ([CLS] q [SEP] context [SEP], offsets) saved to `folder`."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(vocabulary())}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=model_max_length,
    )
    fast.save_pretrained(str(folder))
    return fast


def make_tiny_qa_model(folder: str | Path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random BertForQuestionAnswering (64 positions) and its tokenizer to `folder`; returns it."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = make_qa_tokenizer(folder)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=2,
        intermediate_size=2 * hidden_size, max_position_embeddings=64, type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    BertForQuestionAnswering(config).save_pretrained(str(folder))
    return folder


def qa_row(rng: random.Random, n_words: int, answerable: bool = True, at: int | None = None) -> dict:
    """One example of `n_words` filler words; the marker (when answerable) at word `at` (random by default)."""
    words = [rng.choice(FILLER) for _ in range(n_words)]
    marker = rng.choice(MARKERS)
    answers: dict[str, list] = {"text": [], "answer_start": []}
    if answerable:
        at = rng.randrange(n_words - 1) if at is None else at
        words[at] = marker
        answers = {"text": [words[at + 1]], "answer_start": [len(" ".join(words[: at + 1])) + 1]}
    return {"question": f"what comes after {marker} ?", "context": " ".join(words), "answers": answers}


def qa_rows(n: int, seed: int, words: tuple[int, int] = (12, 40), unanswerable: float = 0.0) -> list[dict]:
    """`n` examples with contexts of `words` filler words; a share `unanswerable` without an answer."""
    rng = random.Random(seed)
    return [qa_row(rng, rng.randint(*words), answerable=rng.random() >= unanswerable) for _ in range(n)]
