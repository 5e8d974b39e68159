"""Cross-field rules: the combinations the seeds' systems refuse or silently ignore.

Each rule has a stable id, a severity and a one-line doc; `ftc lint` runs them all, `ftc compile`
refuses a spec with an error-severity finding. A spec silences a rule with `lint.ignore`. The rules
are registered by topic (training, lora, deepspeed, fsdp, data, paths, storage, env, resources) in the one registry of
`registry`, which the targets' rules use too.
"""

from __future__ import annotations

from ftc.spec.rules import data, deepspeed, env, fsdp, lora, paths, resources, storage, training  # noqa: F401  (they register)
from ftc.spec.rules.data import HUGE_CONTEXT
from ftc.spec.rules.fsdp import hsdp_problem
from ftc.spec.rules.registry import (
    RULES,
    SCHEMA_RULE,
    SECRET_RULE,
    TARGET_RULE,
    UNREADABLE_RULE,
    UNSILENCEABLE,
    Finding,
    KeyPath,
    Rule,
    RuleSet,
    Severity,
    rule,
    run_rules,
)

__all__ = [
    "HUGE_CONTEXT",
    "RULES",
    "SCHEMA_RULE",
    "SECRET_RULE",
    "TARGET_RULE",
    "UNREADABLE_RULE",
    "UNSILENCEABLE",
    "Finding",
    "KeyPath",
    "Rule",
    "RuleSet",
    "Severity",
    "hsdp_problem",
    "rule",
    "run_rules",
]
