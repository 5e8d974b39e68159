"""The errors ftc reports to users: each names where (file:line:col), what (the dotted key) and why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a spec file, or a command-line override (`file` is then `--set`)."""

    file: str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.col or 1}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec."""

    location: Location
    key: str
    message: str
    rule: str = ""  # the lint rule it is reported under when not the schema rule (FTC106: a secret)

    def __str__(self) -> str:
        key = f"{self.key}: " if self.key else ""
        return f"{self.location}: {key}{self.message}"


class FtcError(Exception):
    """An error with a message fit for a user; `exit_code` is what the CLI exits with."""

    exit_code = 1


class UnreadableSpec(FtcError):
    """The file cannot be read as a spec at all: missing, not UTF-8, not YAML, hostile (exit 2)."""

    exit_code = 2

    def __init__(self, location: Location, message: str) -> None:
        self.problem = Problem(location, "", message)
        super().__init__(str(self.problem))


class SpecError(FtcError):
    """The spec is YAML but not a valid spec; carries every problem found (exit 1)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class CompileError(FtcError):
    """The spec is valid but cannot be compiled for a target, or the output cannot be written."""


class SubmitError(FtcError):
    """A build cannot be handed to its target, or the target refused it (`ftc submit`; exit 2 unless said).

    A job that was submitted and then failed is not an error: `Backend.submit` returns it, with its state.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
