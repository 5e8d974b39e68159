"""Tiny models and data built in code, for runtime tests (no hub, no downloads).

`make_tiny_classifier(folder)` writes a 2-layer BERT sequence classifier (hidden 64) and a fast
WordLevel tokenizer into `folder`; `make_classification_data(folder, ...)` writes a labelled
JSON Lines data set whose label is decided by which group of keywords a sentence contains, so a
tiny model learns it in a few dozen steps.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# The label of a generated sentence is the group its keywords come from.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "animal": ("cat", "dog", "horse", "goat", "mouse", "tiger", "zebra", "camel", "otter", "eagle"),
    "food": ("bread", "cheese", "apple", "rice", "soup", "pasta", "lemon", "onion", "honey", "salad"),
    "tool": ("hammer", "saw", "drill", "wrench", "chisel", "shovel", "ladder", "pliers", "rake", "axe"),
}
LABELS = tuple(KEYWORDS)


def _filler_words(n: int = 240) -> tuple[str, ...]:
    """Deterministic made-up words (ka, bo, ...) that carry no label."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    rng = random.Random(1234)
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(2, 3))))
    return tuple(sorted(words))


FILLER = _filler_words()


def vocabulary() -> list[str]:
    """Every token of the tiny tokenizer: special tokens, then keywords and filler words."""
    words = sorted({w for group in KEYWORDS.values() for w in group} | set(FILLER))
    return [*SPECIAL_TOKENS, *words]


def make_tiny_tokenizer(folder: str | Path, model_max_length: int = 64):  # -> PreTrainedTokenizerFast
    """A fast WordLevel tokenizer over `vocabulary()`, trained with `tokenizers` and saved to `folder`."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = vocabulary()[len(SPECIAL_TOKENS) :]
    trainer = WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1, show_progress=False)
    tok.train_from_iterator([" ".join(words)], trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
    fast.save_pretrained(str(folder))
    return fast


def make_tiny_classifier(
    folder: str | Path,
    *,
    num_labels: int = 2,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_position_embeddings: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny random BertForSequenceClassification and its tokenizer to `folder`; returns it.

    The saved head has `num_labels` outputs (2 by default, fewer than the 3 labels of the
    generated data), so the runtime's `ignore_mismatched_sizes` path is exercised as with a
    real checkpoint.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tiny_tokenizer(folder, model_max_length=max_position_embeddings)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(str(folder))
    return folder


def make_sentence(rng: random.Random, label: str, length: tuple[int, int] = (2, 6)) -> str:
    """Filler words with two or three keywords of `label`'s group, in random order."""
    words = [rng.choice(FILLER) for _ in range(rng.randint(*length))]
    words += [rng.choice(KEYWORDS[label]) for _ in range(rng.randint(2, 3))]
    rng.shuffle(words)
    return " ".join(words)


def classification_rows(n: int, seed: int, labels: Sequence[str] = LABELS) -> list[dict[str, str]]:
    """`n` rows {text, label}, labels cycled so the classes are balanced, order shuffled."""
    rng = random.Random(seed)
    rows = [{"text": make_sentence(rng, labels[i % len(labels)]), "label": labels[i % len(labels)]} for i in range(n)]
    rng.shuffle(rows)
    return rows


def write_jsonl(path: str | Path, rows: Sequence[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_classification_data(
    folder: str | Path, n_train: int = 240, n_val: int = 60, seed: int = 0, labels: Sequence[str] = LABELS
) -> tuple[Path, Path]:
    """Write `train.jsonl` and `validation.jsonl` ({"text", "label"}, string labels) to `folder`."""
    folder = Path(folder)
    train = write_jsonl(folder / "train.jsonl", classification_rows(n_train, seed, labels))
    val = write_jsonl(folder / "validation.jsonl", classification_rows(n_val, seed + 10_000, labels))
    return train, val


def make_dropout_free_classification(root: Path) -> tuple[Path, Path]:
    """The tiny classifier with dropout 0 (its masks would differ between runs compared step by step) and
    240 training / 60 validation rows: the model and data folders under `root`."""
    model = make_tiny_classifier(root / "model")
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (model / "config.json").write_text(json.dumps(config))
    make_classification_data(root / "data", n_train=240, n_val=60, seed=0)
    return model, root / "data"
