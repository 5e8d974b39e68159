"""Prepare the translation and summarization demos: a tiny T5 and toy data, built here (no hub, no downloads).

    python examples/prepare_seq2seq_demo.py

No T5, BART or mBART model can be installed from a package index here, so this script builds a
small T5 from scratch (randomly initialised, 3 + 3 layers, width 128, about 1M parameters) with a
word-level tokenizer trained with `tokenizers`, and writes it to examples/models/tiny-t5. It is
not pretrained: the demos show the pipeline learning a rule from nothing in a few minutes on two
CPU cores. With a network, point model_selector_output at a real checkpoint (t5-small,
facebook/bart-base, facebook/mbart-large-cc25 with data.source_lang/target_lang) instead.

The data, generated with a fixed seed, go to examples/data/:
- translation/{train,validation}.jsonl, {"en", "fr"}: toy English -> French sentences ("the red
  cat sees a small dog" -> "le chat rouge voit un petit chien"): word order changes (colour
  adjectives follow the noun), articles and adjectives agree with the French noun's gender;
- summarization/{train,validation}.jsonl, {"article", "highlights"}: short "news" paragraphs of
  two or three sentences; the highlight is a headline of the first one: no time phrase ("on
  monday", "last week"), no articles, present tense ("on monday the mayor opened a new bridge
  near the river . many people came to watch ." -> "mayor opens new bridge near river").

Both output folders are git-ignored. Running it again rewrites the same files.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------- translation: English -> French

# noun: (French, gender)
NOUNS = {
    "cat": ("chat", "m"), "dog": ("chien", "m"), "horse": ("cheval", "m"), "book": ("livre", "m"),
    "boat": ("bateau", "m"), "garden": ("jardin", "m"), "house": ("maison", "f"), "flower": ("fleur", "f"),
    "table": ("table", "f"), "apple": ("pomme", "f"), "cow": ("vache", "f"), "door": ("porte", "f"),
}
# Colours follow the noun in French; size adjectives precede it. (masculine, feminine)
COLOURS = {
    "red": ("rouge", "rouge"), "green": ("vert", "verte"), "blue": ("bleu", "bleue"),
    "black": ("noir", "noire"), "white": ("blanc", "blanche"), "grey": ("gris", "grise"),
}
SIZES = {"small": ("petit", "petite"), "big": ("grand", "grande")}
ARTICLES = {"the": ("le", "la"), "a": ("un", "une")}
VERBS = {"sees": "voit", "likes": "aime", "finds": "trouve", "follows": "suit", "wants": "veut", "paints": "peint"}


def noun_phrase(rng: random.Random) -> tuple[str, str]:
    article, noun = rng.choice(list(ARTICLES)), rng.choice(list(NOUNS))
    french_noun, gender = NOUNS[noun]
    g = 0 if gender == "m" else 1
    en, fr = [article], [ARTICLES[article][g]]
    if rng.random() < 0.4:
        size = rng.choice(list(SIZES))
        en.append(size)
        fr.append(SIZES[size][g])
    en_noun, fr_noun = [noun], [french_noun]
    if rng.random() < 0.6:
        colour = rng.choice(list(COLOURS))
        en_noun.insert(0, colour)  # the red cat
        fr_noun.append(COLOURS[colour][g])  # le chat rouge
    en += en_noun
    fr += fr_noun
    return " ".join(en), " ".join(fr)


def translation_pair(rng: random.Random) -> dict[str, str]:
    subject, object_ = noun_phrase(rng), noun_phrase(rng)
    verb = rng.choice(list(VERBS))
    return {"en": f"{subject[0]} {verb} {object_[0]}", "fr": f"{subject[1]} {VERBS[verb]} {object_[1]}"}


# --------------------------------------------------------------------------- summarization: lead sentence

PEOPLE = ["the mayor", "the minister", "a local farmer", "the football club", "the city council", "a young artist",
          "the school", "the museum", "a small company", "the hospital", "the police", "the orchestra"]
# (past tense in the article, present tense in the headline)
ACTIONS = [("opened a new bridge", "opens new bridge"), ("won the cup", "wins cup"),
           ("announced new plans", "announces new plans"), ("sold a famous painting", "sells famous painting"),
           ("closed the old station", "closes old station"), ("found a rare bird", "finds rare bird"),
           ("built a new library", "builds new library"), ("raised money for the park", "raises money for park"),
           ("hired twenty workers", "hires twenty workers"), ("played a free concert", "plays free concert"),
           ("cut the bus fares", "cuts bus fares"), ("planted a thousand trees", "plants thousand trees")]
PLACES = ["in the north", "in the old town", "near the river", "in the capital", "by the sea", "in the village"]
TIMES = ["on monday", "on friday", "last week", "this morning", "on sunday", "yesterday"]
FOLLOW_UPS = ["many people came to watch .", "the news surprised everyone .", "the project took two years .",
              "local shops expect more visitors .", "critics called the plan too expensive .",
              "the event was shown on television .", "more details will follow next month .",
              "children were given the day off .", "the weather stayed dry all day ."]


def headline(*parts: str) -> str:
    """Headline style: no articles."""
    return " ".join(w for part in parts for w in part.split() if w not in ("the", "a"))


def summarization_pair(rng: random.Random) -> dict[str, str]:
    who, (did, does), where, when = rng.choice(PEOPLE), rng.choice(ACTIONS), rng.choice(PLACES), rng.choice(TIMES)
    first = f"{who} {did} {where} {when} ." if rng.random() < 0.5 else f"{when} {who} {did} {where} ."
    rest = rng.sample(FOLLOW_UPS, rng.randint(1, 2))
    return {"article": " ".join([first, *rest]), "highlights": headline(who, does, where)}


# --------------------------------------------------------------------------- model and tokenizer

PREFIX_WORDS = ["translate", "english", "to", "french", "summarize", ":"]


def build_tokenizer(folder: Path, texts: list[str]):  # -> PreTrainedTokenizerFast
    """A T5-style word-level tokenizer (<pad> 0, </s> 1 appended to every sequence, <unk> 2)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "</s>", "<unk>"]
    tok = Tokenizer(WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([*texts, " ".join(PREFIX_WORDS)], trainer=WordLevelTrainer(special_tokens=special, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=64
    )
    fast.save_pretrained(str(folder))
    return fast


def build_t5(folder: Path, tokenizer, d_model: int, layers: int, seed: int) -> int:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // 4, d_ff=2 * d_model, num_layers=layers,
        num_decoder_layers=layers, num_heads=4, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    model.save_pretrained(str(folder))
    return sum(p.numel() for p in model.parameters())


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=4000, help="training pairs per task (default 4000)")
    parser.add_argument("--n-val", type=int, default=200, help="validation pairs per task (default 200)")
    parser.add_argument("--d-model", type=int, default=128, help="width of the T5 (default 128)")
    parser.add_argument("--layers", type=int, default=3, help="encoder and decoder layers (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    data = HERE / "data"
    pairs = {
        "translation": [translation_pair(rng) for _ in range(args.n_train + args.n_val)],
        "summarization": [summarization_pair(rng) for _ in range(args.n_train + args.n_val)],
    }
    texts = []
    for task, rows in pairs.items():
        write_jsonl(data / task / "train.jsonl", rows[: args.n_train])
        write_jsonl(data / task / "validation.jsonl", rows[args.n_train :])
        texts += [value for row in rows for value in row.values()]
        print(f"{data / task}: train.jsonl ({args.n_train} pairs), validation.jsonl ({args.n_val}); e.g. {rows[0]}")

    folder = HERE / "models" / "tiny-t5"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    tokenizer = build_tokenizer(folder, texts)
    n = build_t5(folder, tokenizer, args.d_model, args.layers, args.seed)
    print(f"{folder}: T5 from scratch, {args.layers}+{args.layers} layers, width {args.d_model}, "
          f"{n:,} parameters, vocabulary {len(tokenizer)}")


if __name__ == "__main__":
    main()
