"""The one rule mechanism: a decorator registers a function that yields findings under an id, severity and title.

Spec rules run over the resolved spec (`ftc.spec.rules.RULES`); each target's run over its plan (the
`RuleSet` its module owns, named by `Backend.rules`). `ftc docs --rules`, SARIF and lint.ignore read the
registries, so a rule exists exactly where it is declared.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from ftc.spec.resolved import Resolved

Severity = Literal["error", "warning"]
# A rule whose findings are errors or warnings depending on the case declares "error/warning".
Declared = Literal["error", "warning", "error/warning"]
KeyPath = tuple[str | int, ...]
# What a rule function yields: (key path, message), plus the severity when the rule declares both.
Yielded = tuple[KeyPath, str] | tuple[KeyPath, str, Severity]

S = TypeVar("S")
Check = Callable[[S], Iterator[Yielded]]


@dataclass(frozen=True)
class Finding:
    """One lint result: which rule, how bad, which key, and what to do."""

    rule: str
    severity: Severity
    path: KeyPath
    message: str

    @classmethod
    def error(cls, rule: str, path: KeyPath, message: str) -> Finding:
        return cls(rule, "error", path, message)

    @classmethod
    def warning(cls, rule: str, path: KeyPath, message: str) -> Finding:
        return cls(rule, "warning", path, message)

    @property
    def key(self) -> str:
        return ".".join(str(p) for p in self.path)


@dataclass(frozen=True)
class Rule(Generic[S]):
    """A registered rule: stable id, declared severity, title, what it checks (`doc`) and its function."""

    id: str
    severity: Declared
    title: str
    doc: str
    check: Check[S]

    @property
    def severities(self) -> tuple[Severity, ...]:
        return tuple(self.severity.split("/"))  # type: ignore[arg-type]

    def findings(self, subject: S) -> Iterator[Finding]:
        """The rule's findings on `subject`; a severity the rule does not declare is a bug (ValueError)."""
        for found in self.check(subject):
            path, message = found[0], found[1]
            severity = found[2] if len(found) == 3 else self._only_severity()  # type: ignore[misc]
            if severity not in self.severities:
                raise ValueError(f"rule {self.id} is declared {self.severity} but a finding says {severity}")
            yield Finding(self.id, severity, path, message)

    def _only_severity(self) -> Severity:
        if len(self.severities) != 1:
            raise ValueError(f"rule {self.id} is declared {self.severity}: each finding must say which")
        return self.severities[0]


class RuleSet(Mapping[str, Rule[S]]):
    """Rules over one kind of subject, by id, in id order; `@rules.rule(id, severity, title)` registers one."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule[S]] = {}

    def rule(self, rule_id: str, severity: Declared, title: str, doc: str | None = None) -> Callable[[Check[S]], Check[S]]:
        """Register the decorated function; its docstring (or `doc`) documents the rule."""

        def register(check: Check[S]) -> Check[S]:
            if rule_id in self._rules:
                raise ValueError(f"rule {rule_id} registered twice")
            if severity not in ("error", "warning", "error/warning"):
                raise ValueError(f"rule {rule_id}: severity {severity!r} is not error, warning or error/warning")
            text = " ".join((doc if doc is not None else check.__doc__ or "").split())
            self._rules[rule_id] = Rule(rule_id, severity, title, text, check)
            return check

        return register

    def run(self, subject: S, ignored: Collection[str] = ()) -> list[Finding]:
        """Every finding of every rule not in `ignored`, in rule order."""
        return [f for rule_id, r in self.items() if rule_id not in ignored for f in r.findings(subject)]

    def __getitem__(self, rule_id: str) -> Rule[S]:
        return self._rules[rule_id]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._rules))

    def __len__(self) -> int:
        return len(self._rules)


SCHEMA_RULE = "FTC001"
UNREADABLE_RULE = "FTC000"
SECRET_RULE = "FTC106"
TARGET_RULE = "FTC002"  # a target the spec's targets.enabled leaves out
# Rules lint.ignore cannot silence: a literal secret would reach the artifacts.
UNSILENCEABLE = frozenset({SECRET_RULE})

# The spec's rules, over the resolved spec; the modules of this package register them.
RULES: RuleSet[Resolved] = RuleSet()
rule = RULES.rule


def run_rules(resolved: Resolved) -> list[Finding]:
    """Every finding of every spec rule not ignored by the spec, in rule order."""
    return RULES.run(resolved, resolved.spec.lint.ignore)
