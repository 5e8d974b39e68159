"""Each target declares the rules its checks emit, and `ftc docs --rules` documents them with the spec's."""

from __future__ import annotations

import ast
import inspect
import re
from types import ModuleType

import pytest

from ftc.backends.base import Backend
from ftc.backends.registry import backends
from ftc.spec.docs import render_rules
from ftc.spec.rules import RULES

RULE_ID = re.compile(r"FTC\d{3}")
BUILTIN = ("azureml", "local", "ray", "slurm")


def _modules(backend: Backend) -> list[ModuleType]:
    """The backend's module and the private `ftc.backends._*` modules it uses (`_azureml_component`)."""
    module = inspect.getmodule(type(backend))
    assert module is not None
    helpers = [v for v in vars(module).values() if inspect.ismodule(v) and v.__name__.startswith("ftc.backends._")]
    return [module, *helpers]


def _call_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _rule_id(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) and RULE_ID.fullmatch(node.value) else None


def _emitted(backend: Backend) -> tuple[set[str], dict[str, set[str]]]:
    """Every rule id literal outside the `TargetRule` declarations, and the severities the calls give them.

    `Finding.error` / `Finding.warning` name theirs; a `ComponentProblem` is an error unless it says otherwise.
    """
    used: set[str] = set()
    severities: dict[str, set[str]] = {}
    for module in _modules(backend):
        tree = ast.parse(inspect.getsource(module))
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args]
        declarations = {id(c.args[0]) for c in calls if _call_name(c) == "TargetRule"}
        used |= {v for n in ast.walk(tree) if isinstance(n, ast.expr) and id(n) not in declarations and (v := _rule_id(n))}
        for c in calls:
            rule_id, name = _rule_id(c.args[0]), _call_name(c)
            if rule_id is None or name == "TargetRule":
                continue
            if name in ("error", "warning"):
                severity: object = name
            elif name == "ComponentProblem":
                given = [k.value for k in c.keywords if k.arg == "severity"] + c.args[3:]
                severity = given[0].value if given and isinstance(given[0], ast.Constant) else "error"
            else:
                pytest.fail(f"{module.__name__}: {rule_id} is passed to {name}(), which the test cannot read a severity from")
            severities.setdefault(rule_id, set()).add(str(severity))
    return used, severities


@pytest.mark.parametrize("name", BUILTIN)
def test_a_target_declares_exactly_the_rules_its_checks_emit(name: str) -> None:
    backend = backends()[name]
    declared = {r.id: r.severity for r in backend.rules}
    used, severities = _emitted(backend)
    assert not used - set(declared), f"{name} emits rules it does not declare in `rules`: {sorted(used - set(declared))}"
    assert not set(declared) - used, f"{name} declares rules no check emits: {sorted(set(declared) - used)}"
    for rule_id, found in severities.items():
        assert declared[rule_id] == "/".join(sorted(found)), f"{rule_id} is declared {declared[rule_id]} but emitted as {found}"


def test_rule_ids_are_unique_and_documented() -> None:
    ids = list(RULES) + [r.id for b in backends().values() for r in b.rules]
    assert len(ids) == len(set(ids)), f"rule ids used twice: {sorted({i for i in ids if ids.count(i) > 1})}"
    for backend in backends().values():
        for r in backend.rules:
            assert RULE_ID.fullmatch(r.id) and r.title.strip() and r.doc.strip(), r
            assert r.severity in ("error", "warning", "error/warning"), r


def test_the_rules_page_lists_every_target_rule() -> None:
    page = render_rules()
    for name, backend in backends().items():
        if backend.rules:
            section = page.split(f"## Target `{name}`", 1)[1].split("\n## ", 1)[0]
            assert all(f"| {r.id} " in section for r in backend.rules), name
