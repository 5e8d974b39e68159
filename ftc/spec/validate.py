"""Schema validation of a parsed spec, with errors that name file:line:col, key and fix."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from ftc.errors import Problem, SpecError
from ftc.spec.keys import suggest
from ftc.spec.loader import SourceDoc
from ftc.spec.model import SECTION_ALIASES, SpecBase, spec_model
from ftc.spec.rules import RULES, UNSILENCEABLE
from ftc.spec.secrets import mask_secrets
from ftc.spec.sections import METRICS

_SECTION_OF_ALIAS = {section: alias for alias, section in SECTION_ALIASES.items()}


def validate_spec(doc: SourceDoc) -> SpecBase:
    """The spec model for `doc`, or `SpecError` listing every problem."""
    try:
        spec = spec_model().model_validate(doc.data)
    except ValidationError as exc:
        raise SpecError([_problem(err, doc) for err in exc.errors()]) from None
    found = _cross_checks(spec) + _ignore_checks(spec)
    problems = [Problem(doc.locate(path), mask_secrets(_dotted(path)), mask_secrets(msg)) for path, msg in found]
    if problems:
        raise SpecError(problems)
    return spec


def _cross_checks(spec: SpecBase) -> list[tuple[tuple[str, ...], str]]:
    """Rules that make a spec invalid outright (lint rules only warn or advise)."""
    found = []
    metric = spec.evaluation.metric_for_best_model
    if metric not in METRICS[spec.task]:
        found.append(
            (
                ("evaluation", "metric_for_best_model"),
                f"{metric!r} is not a metric of task {spec.task}; expected one of {', '.join(METRICS[spec.task])}",
            )
        )
    res = spec.resources
    if res.num_devices is not None and res.num_devices != res.nodes * res.processes_per_node:
        if "processes_per_node" in res.model_fields_set or res.num_devices % res.nodes:
            found.append(
                (
                    ("resources", "num_devices"),
                    f"is {res.num_devices} but nodes x processes_per_node is {res.nodes * res.processes_per_node}",
                )
            )
    return found


def _ignore_checks(spec: SpecBase) -> list[tuple[tuple[str, ...], str]]:
    """Each lint.ignore entry names a known rule that may be silenced, and says why."""
    known = rule_ids()
    found = []
    for rule_id, reason in spec.lint.ignore.items():
        path = ("lint", "ignore", rule_id)
        if rule_id in UNSILENCEABLE:
            found.append((path, f"{rule_id} cannot be silenced; put the secret in an environment variable listed in env.secrets"))
        elif rule_id not in known:
            close = difflib.get_close_matches(rule_id, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            found.append((path, f"unknown rule {rule_id!r}{hint}; `ftc docs --rules` lists them"))
        elif not reason.strip():
            found.append((path, "needs a reason: give the reason the rule does not apply, as {" + rule_id + ": 'why'}"))
    return found


def rule_ids() -> set[str]:
    """Every rule id lint.ignore may name: the spec's rules and each registered target's."""
    from ftc.spec.targets import targets

    return set(RULES).union(*(target.rules for target in targets().values()))


def _problem(err: Any, doc: SourceDoc) -> Problem:
    path = _source_path(tuple(err["loc"]), doc)
    kind = err["type"]
    if kind == "extra_forbidden":
        hint = suggest(path)
        message = "unknown key" + (f"; {hint}" if hint else "")
    elif kind == "missing":
        message = "is required"
    else:
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if not isinstance(value, (dict, list)) and kind != "value_error":
            message += f" (got {mask_secrets(repr(value))[:80]})"
    return Problem(doc.locate(path), mask_secrets(_dotted(path)), mask_secrets(message))


def _source_path(loc: tuple[Any, ...], doc: SourceDoc) -> tuple[Any, ...]:
    """Pydantic's error location in the names the document used (section aliases undone)."""
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    if loc and loc[0] in _SECTION_OF_ALIAS and (loc[0],) not in doc.positions:
        loc = (_SECTION_OF_ALIAS[loc[0]], *loc[1:])
    return loc


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)
