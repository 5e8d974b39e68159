"""`ftc explain`: each resolved parameter with its value and where it came from."""

from __future__ import annotations

import json

from ftc.spec.resolved import Resolved
from ftc.spec.secrets import mask_secrets


def explain_lines(resolved: Resolved) -> list[str]:
    """Lines `section.key = value    # source`, aligned, followed by the derived values; secrets masked."""
    config = resolved.spec.model_dump(mode="json")
    rows = []
    for key, source in resolved.sources.items():
        section, name = key.split(".", 1)
        rows.append((key, json.dumps(config[section][name]), source))
    rows += [(f"derived.{k}", json.dumps(v), "derived") for k, v in resolved.derived.items()]
    rows = [(mask_secrets(k), mask_secrets(v), mask_secrets(s)) for k, v, s in rows]
    width = min(60, max(len(k) + len(v) for k, v, _ in rows) + 3)
    head = mask_secrets(f"# {resolved.name}: task {resolved.spec.task}, spec {resolved.doc.file}")
    return [head] + [f"{f'{k} = {v}':<{width}} # {s}" for k, v, s in rows]
