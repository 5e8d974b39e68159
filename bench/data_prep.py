"""Data preparation: rows/s and peak RSS of reading chat JSON Lines, the list reader of ftc before issue 14
beside the Arrow reader (Hugging Face datasets), and the Arrow reader again from its cache.

For each size (rows of generated chat data, about 400 bytes a row) a fresh child process reads the file
and checks its messages column (`read_table` + `require_columns`), as a task's load_data does; the child
reports its wall time and peak RSS (resource.getrusage ru_maxrss). The old reader is HEAD~'s data.py
(`git show <rev>:ftc/runtime/data.py`, loaded as a module); the new one is ftc.runtime.data with a fresh
HF_DATASETS_CACHE for its first run, and the same cache for the second ("cached").

Usage: python bench/data_prep.py [--sizes 10000,100000,1000000] [--old-rev f7dc857]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD_REV = "f7dc857"  # the last commit before the Arrow reader

CHILD = """\
import importlib.util, json, resource, sys, time
sys.path.insert(0, {root!r})
kind, path, old = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "old":
    spec = importlib.util.spec_from_file_location("old_data", old)
    data = sys.modules["old_data"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
else:
    import ftc.runtime.data as data
import datasets  # imported before timing: both readers pay for their imports outside the measure
from pathlib import Path
start = time.perf_counter()
table = data.read_table(Path(path), "train")
data.require_columns(table, ["messages"])
seconds = time.perf_counter() - start
print(json.dumps({{"rows": len(table), "seconds": seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

WORDS = "the plan report meeting budget team week update draft review launch client schedule notes".split()


def chat(rng: random.Random) -> dict[str, object]:
    def say(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    return {"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": say(rng.randint(8, 20))},
        {"role": "assistant", "content": say(rng.randint(15, 40))},
    ]}


def write_chats(path: Path, rows: int) -> None:
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as f:
        for _ in range(rows):
            f.write(json.dumps(chat(rng)) + "\n")


def measure(kind: str, path: Path, old: Path, cache: Path) -> dict[str, float]:
    env = {"HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(root=str(ROOT)), kind, str(path), str(old)],
        capture_output=True, text=True, env=env,
    )
    if out.returncode:
        raise SystemExit(f"{kind} reader failed on {path}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--old-rev", default=OLD_REV)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftc-data-prep-") as tmp:
        folder = Path(tmp)
        old = folder / "old_data.py"
        old.write_bytes(subprocess.run(["git", "show", f"{args.old_rev}:ftc/runtime/data.py"], cwd=ROOT, capture_output=True, check=True).stdout)
        print("| rows | file MiB | reader | rows/s | seconds | peak RSS MiB |")
        print("| ---: | ---: | --- | ---: | ---: | ---: |")
        for rows in (int(n) for n in args.sizes.split(",")):
            path = folder / f"chats-{rows}.jsonl"
            write_chats(path, rows)
            mib = path.stat().st_size / 2**20
            cache = folder / f"cache-{rows}"
            for kind, label in (("old", "list of dicts (before)"), ("new", "Arrow, first run"), ("new", "Arrow, cached")):
                r = measure(kind, path, old, cache)
                assert r["rows"] == rows, r
                print(f"| {rows} | {mib:.0f} | {label} | {rows / r['seconds']:,.0f} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} |", flush=True)
            path.unlink()


if __name__ == "__main__":
    main()
