"""What every importer returns: ordered ftc settings with their origins, what could not be mapped, and warnings."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import yaml

from ftc.errors import FtcError, Location
from ftc.spec.docs import default_value, iter_params
from ftc.spec.loader import MAX_DEPTH, MAX_NODES, SourceDoc, read_spec_bytes

Key = tuple[str, ...]


@dataclass(frozen=True)
class Setting:
    """One value of the ftc spec: `key` is its path in the spec, `origin` says where it came from."""

    key: Key
    value: Any
    origin: str


@dataclass(frozen=True)
class Unmapped:
    """A source setting with no ftc equivalent, and why."""

    name: str
    value: Any
    reason: str


@dataclass
class Imported:
    """The result of converting one source file."""

    source: str
    tool: str
    settings: list[Setting] = field(default_factory=list)
    unmapped: list[Unmapped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def set(self, key: Key, value: Any, origin: str) -> None:
        """Add a setting; a key set twice is a bug in the importer."""
        if any(s.key == key for s in self.settings):
            raise ValueError(f"{'.'.join(key)} is set twice")
        self.settings.append(Setting(key, value, origin))

    def skip(self, name: str, value: Any, reason: str) -> None:
        """Record a source setting that has no ftc equivalent; it is also a warning."""
        self.unmapped.append(Unmapped(name, value, reason))
        self.warnings.append(f"{self.source}: {name}: not imported: {reason}")


@dataclass(frozen=True)
class Converted:
    """A source name an importer converts in code rather than through a table: the ftc keys it sets, and how
    (listed beside the function that does it, for `ftc docs --source`)."""

    keys: tuple[str, ...]
    note: str
    values: dict[Any, Any] | None = None  # the tool's value -> the first key's value, where they differ


@cache
def ftc_defaults(task: str) -> dict[str, Any]:
    """Every spec key's default for `task` (dotted key -> value), from the schema."""
    return {param.key: default_value(param, task) for param in iter_params()}


class ImportFailed(FtcError):
    """The source file cannot be imported (exit 2); the message names the file, line and key."""

    exit_code = 2

    def __init__(self, location: Location, key: str, message: str) -> None:
        self.location, self.key = location, key
        super().__init__(f"{location}: {key}: {message}" if key else f"{location}: {message}")


class ImportRefused(ImportFailed):
    """A value the source tool itself rejects: names the flag, the value and the values it accepts."""

    def __init__(self, location: Location, flag: str, value: Any, accepted: list[str], tool: str) -> None:
        self.flag, self.value, self.accepted = flag, value, accepted
        super().__init__(location, flag, f"{value!r} is refused by {tool}; it accepts {', '.join(accepted)}")


class Importer(Protocol):
    """An importer module's `IMPORTER`."""

    name: str

    def detect(self, path: Path, text: str) -> bool:
        """Whether the file at `path` (its text given) is this tool's."""
        ...

    def convert(self, path: Path) -> Imported:
        """The ftc settings that make the file's run; `ImportFailed` when it cannot be imported."""
        ...


def typed_value(doc: SourceDoc, where: Key, value: Any, kind: type) -> Any:
    """`value` as a pydantic config of the source tool reads it (numbers written as text included), or ImportFailed."""
    if kind is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ImportFailed(doc.locate(where), ".".join(where), f"{value!r} is not a {kind.__name__}")


def read_yaml_source(path: Path) -> SourceDoc:
    """A YAML mapping read as the source tools read it (yaml.safe_load: a repeated key's last value wins), with
    the position of every key, within a spec's limits on size, nesting and alias expansion."""
    raw = read_spec_bytes(path)
    try:
        loader = yaml.SafeLoader(raw.decode("utf-8"))
        try:
            root = loader.get_single_node()
            positions = _positions(root, str(path)) if root is not None else {}
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError:
        raise ImportFailed(Location(str(path)), "", "is not UTF-8 text") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(str(path), mark.line + 1, mark.column + 1) if mark else Location(str(path))
        raise ImportFailed(where, "", f"is not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ImportFailed(Location(str(path)), "", f"is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ImportFailed(Location(str(path)), "", "must be a YAML mapping of settings")
    return SourceDoc(data, str(path), "", positions, path.resolve().parent)


def _positions(root: yaml.Node, label: str) -> dict[Key, Location]:
    """Where each mapping key stands, by its path of keys; refuses deep nesting and alias bombs."""
    positions: dict[Key, Location] = {}
    pending: list[tuple[yaml.Node, Key]] = [(root, ())]
    seen = 0
    while pending:
        node, path = pending.pop()
        seen += 1
        if seen > MAX_NODES or len(path) > MAX_DEPTH:
            limits = f"nests deeper than {MAX_DEPTH} levels or expands to over {MAX_NODES} values"
            raise ImportFailed(Location(label), "", limits)
        if isinstance(node, yaml.SequenceNode):
            pending += [(item, (*path, str(i))) for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = (*path, str(key.value))
                positions[name] = Location(label, key.start_mark.line + 1, key.start_mark.column + 1)
                pending.append((value, name))
    return positions
