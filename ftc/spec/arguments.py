"""How the runtime reads the VALUE of a `--<parameter> VALUE` argument (the grammar itself: ftc.contract).

Targets that put values on the runtime's command line (Azure ML's component) use it to check that the
runtime will read back what they wrote.
"""

from __future__ import annotations

from typing import Any, get_args, get_origin

from pydantic import BaseModel

from ftc.spec.loader import load_value
from ftc.spec.model import SpecBase


def argument_value(text: str, key: tuple[str, ...]) -> Any:
    """The value of parameter `key` given as `text`: YAML, except that yes/no/on/off stay words, and a list
    parameter takes comma-separated words. UnreadableSpec when `text` is not YAML."""
    value = load_value(text, f"--{'.'.join(key)}") if text.strip() else ""
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        value = text.strip()  # YAML 1.1 reads no/yes/on/off as booleans: `--evaluation_strategy no`
    if isinstance(value, str) and _is_list_field(key):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return value


def _is_list_field(key: tuple[str, ...]) -> bool:
    model: Any = SpecBase
    for part in key:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return get_origin(model) is list or any(get_origin(a) is list for a in get_args(model))
