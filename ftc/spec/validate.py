"""Schema validation of a parsed spec, with errors that name file:line:col, key and fix."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import ValidationError

from ftc.errors import Problem, SpecError
from ftc.spec.foreign import FOREIGN_NAMES, secret_env, task_hint
from ftc.spec.keys import accepted_names, foreign_hint, leaf_index, suggest
from ftc.spec.loader import SourceDoc
from ftc.spec.model import SECTION_ALIASES, SpecBase, spec_model
from ftc.spec.rules import RULES, SECRET_RULE, UNSILENCEABLE
from ftc.spec.secrets import mask_secrets
from ftc.spec.sections import METRICS

_SECTION_OF_ALIAS = {section: alias for alias, section in SECTION_ALIASES.items()}


def validate_spec(doc: SourceDoc) -> SpecBase:
    """The spec model for `doc`, or `SpecError` listing every problem."""
    try:
        spec = spec_model().model_validate(doc.data)
    except ValidationError as exc:
        raise SpecError(_schema_problems(exc.errors(), doc)) from None
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


def _schema_problems(errors: list[Any], doc: SourceDoc) -> list[Problem]:
    """One problem per pydantic error; a credential key of another tool is a leaked secret (FTC106), and
    unknown top-level keys (another tool's flat file) are reported together, by the section they belong in."""
    problems: list[Problem] = []
    top_level: list[str] = []
    for err in errors:
        path = _source_path(tuple(err["loc"]), doc)
        if err["type"] == "extra_forbidden":
            problems += _foreign_secrets(path, err.get("input"), doc)
            if secret_env(str(path[-1])):
                continue
            if len(path) == 1:
                top_level.append(str(path[0]))
                continue
        problems.append(_problem(err, path, doc))
    if len(top_level) == 1:
        key = top_level[0]
        return [*problems, Problem(doc.locate((key,)), mask_secrets(key), mask_secrets(_unknown(suggest((key,)))))]
    return [*problems, *_unknown_top_level(top_level, doc)]


def _problem(err: Any, path: tuple[Any, ...], doc: SourceDoc) -> Problem:
    kind = err["type"]
    if kind == "extra_forbidden":
        message = _unknown(suggest(path))
    elif kind == "missing":
        message = "is required"
    else:
        message = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        if not isinstance(value, (dict, list)) and kind != "value_error":
            message += f" (got {mask_secrets(repr(value))[:80]})"
        hint = task_hint(value) if path == ("task",) else foreign_hint(str(path[-1])) if len(path) == 1 else ""
        message += f"; {hint}" if hint else ""
    return Problem(doc.locate(path), mask_secrets(_dotted(path)), mask_secrets(message))


def _unknown_top_level(keys: list[str], doc: SourceDoc) -> list[Problem]:
    """Unknown top-level keys, one problem per section they belong in (and one for those with no home), each
    at its first key and listing every key with its line: a flat file of another tool gives a few errors."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(_destination(key)[0].split(".")[0], []).append(key)
    problems = []
    for section, names in groups.items():
        listed = ", ".join(_listed(name, doc) for name in names)
        one = len(names) == 1
        if section:
            verb = "key at the top level that belongs" if one else "keys at the top level that belong"
            message = f"unknown {verb} in the {section} section: {listed}"
        else:
            known = ", ".join(sorted(n for n in accepted_names(spec_model()) if n in spec_model().model_fields))
            message = f"unknown key{'' if one else 's'}, no ftc parameter: {listed}; known keys here: {known}"
        problems.append(Problem(doc.locate((names[0],)), mask_secrets(names[0]), mask_secrets(message)))
    if len(keys) >= 3:
        first = problems[0]
        note = "; a whole config of another tool (Axolotl, LLMForge, llama-recipes) is converted by `ftc import`"
        problems[0] = Problem(first.location, first.key, first.message + note)
    return problems


def _destination(key: str) -> tuple[str, str]:
    """(the dotted key that a top-level `key` stands for, how its value changes), or ("", "")."""
    home = leaf_index().get(key)
    if home:
        return f"{home[0]}.{home[1]}", ""
    return FOREIGN_NAMES.get(key, ("", ""))


def _listed(key: str, doc: SourceDoc) -> str:
    """`key (line N) -> section.name (how)` for the grouped message."""
    dotted, how = _destination(key)
    where = doc.locate((key,))
    text = f"{key} (line {where.line})" if where.line is not None else f"{key} ({where.file})"
    return text + (f" -> {dotted}" if dotted else "") + (f" ({how})" if how else "")


def _unknown(hint: str) -> str:
    return "unknown key" + (f"; {hint}" if hint else "")


def _foreign_secrets(path: tuple[Any, ...], value: Any, doc: SourceDoc) -> list[Problem]:
    """FTC106 for each credential key of another tool at `path` or inside its (unknown) value."""
    found = []
    if path and secret_env(str(path[-1])):
        env = secret_env(str(path[-1]))
        message = (
            f"holds a credential ({path[-1]} is another tool's key for {env}): a spec never holds secrets; "
            f"remove it, set {env} in the environment and list it in env.secrets"
        )
        found.append(Problem(doc.locate(path), mask_secrets(_dotted(path)), mask_secrets(message), SECRET_RULE))
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _foreign_secrets((*path, key), inner, doc)
    return found


def _source_path(loc: tuple[Any, ...], doc: SourceDoc) -> tuple[Any, ...]:
    """Pydantic's error location in the names the document used (section aliases undone)."""
    loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
    if loc and loc[0] in _SECTION_OF_ALIAS and (loc[0],) not in doc.positions:
        loc = (_SECTION_OF_ALIAS[loc[0]], *loc[1:])
    return loc


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)
