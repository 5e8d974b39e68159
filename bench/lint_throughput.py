"""In-process lint throughput over a few hundred generated specs, beside a baseline.

ftc lint = parse with positions + validate + resolve + every rule; the baseline is the least a
linter could do: a libyaml load + pydantic validation of the same documents. Both run over the
same specs, interleaved in rounds. Usage: python bench/lint_throughput.py [--specs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import yaml

from ftc.compiler.build import resolve_doc
from ftc.spec.loader import parse_spec_text
from ftc.spec.model import spec_model
from ftc.spec.rules import run_rules

ROOT = Path(__file__).resolve().parent.parent
SEEDS = sorted(ROOT.glob("tests/golden/*/spec.yaml")) + sorted(ROOT.glob("examples/*.yaml"))


def generate(count: int, seed: int = 0) -> list[bytes]:
    """Valid specs: the shipped ones with randomised hyper-parameters."""
    rng = random.Random(seed)
    bases = [yaml.safe_load(p.read_text()) for p in SEEDS]
    out = []
    for i in range(count):
        spec = dict(bases[i % len(bases)])
        optimizer = {k: v for k, v in spec.get("optimizer", {}).items() if k != "lr"}
        training = {k: v for k, v in spec.get("training", {}).items() if k != "num_epochs"}
        spec["optimizer"] = {**optimizer, "learning_rate": rng.choice([1e-5, 2e-5, 1e-4, 3e-4])}
        spec["training"] = {**training, "num_train_epochs": rng.randint(1, 5)}
        spec["lora"] = {**spec.get("lora", spec.pop("lora_config", {})), "apply_lora": rng.random() < 0.5}
        out.append(yaml.safe_dump(spec).encode())
    return out


def ftc_lint(docs: list[bytes]) -> int:
    findings = 0
    for i, raw in enumerate(docs):
        resolved = resolve_doc(parse_spec_text(raw, f"spec{i}.yaml"), [])
        findings += len(run_rules(resolved))
    return findings


def baseline(docs: list[bytes]) -> int:
    model = spec_model()
    for raw in docs:
        model.model_validate(yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    docs = generate(args.specs)
    rates: dict[str, list[float]] = {"ftc lint (in-process)": [], "baseline: libyaml load + validate": []}
    for _ in range(args.rounds):
        for name, fn in (("ftc lint (in-process)", ftc_lint), ("baseline: libyaml load + validate", baseline)):
            start = time.perf_counter()
            fn(docs)
            rates[name].append(len(docs) / (time.perf_counter() - start))
    base = statistics.median(rates["baseline: libyaml load + validate"])
    print(f"{'':32} {'specs/s (median)':>16} {'x baseline':>10}   ({args.specs} specs, {args.rounds} rounds)")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"{name:32} {med:16.0f} {med / base:10.2f}")


if __name__ == "__main__":
    main()
