"""Reads a spec file into plain data plus the line and column of every key.

The YAML is composed into nodes with PyYAML's safe loader and converted here, so that hostile
documents are refused early and cheaply: alias expansion and nesting are bounded, object tags
and duplicate keys are errors, and only regular files of capped size are read.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftc.errors import Location, UnreadableSpec

MAX_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 40

Path_ = tuple[str | int, ...]

# libyaml's parser where PyYAML was built with it (the wheels are): several times faster.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_CORE_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("null", "bool", "int", "float", "str", "map", "seq", "timestamp", "merge")
}


@dataclass
class SourceDoc:
    """A parsed spec: its data, where each key stands, and the digest of its bytes."""

    data: dict[str, Any]
    file: str
    sha256: str
    positions: dict[Path_, Location] = field(default_factory=dict)
    base_dir: Path = Path(".")

    def locate(self, path: Path_) -> Location:
        """The location of the deepest key on `path` that the document has."""
        for end in range(len(path), 0, -1):
            found = self.positions.get(tuple(path[:end]))
            if found is not None:
                return found
        return Location(self.file, 1, 1)


def load_spec_file(path: str | Path) -> SourceDoc:
    """Read and parse the spec at `path`; `UnreadableSpec` says why when it cannot."""
    path = Path(path)
    doc = parse_spec_text(read_spec_bytes(path), str(path))
    doc.base_dir = path.resolve().parent
    return doc


def read_spec_bytes(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_BYTES, never reading more than one byte past that.

    The file is opened without blocking and checked on the open descriptor, so a FIFO, a device
    such as /dev/zero, or a file swapped in after a check is refused rather than read.
    """
    label = Location(str(path))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UnreadableSpec(label, f"cannot be read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UnreadableSpec(label, "is a folder, not a spec file")
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableSpec(label, "is not a regular file (a device, pipe or socket); give the path of a spec file")
        if info.st_size > MAX_BYTES:
            raise UnreadableSpec(label, f"is {info.st_size} bytes; a spec may be at most {MAX_BYTES} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UnreadableSpec(label, f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_BYTES:
        raise UnreadableSpec(label, f"is more than {MAX_BYTES} bytes; a spec may be at most {MAX_BYTES} bytes")
    return raw


def parse_spec_text(raw: bytes, label: str) -> SourceDoc:
    """Parse spec bytes; `label` names the source in errors."""
    if len(raw) > MAX_BYTES:
        raise UnreadableSpec(Location(label), f"is {len(raw)} bytes; a spec may be at most {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise UnreadableSpec(Location(label, line, col), "is not UTF-8 text") from None
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        raise _control_character(label, text, exc) from None
    try:
        root = loader.get_single_node()
    except yaml.reader.ReaderError as exc:  # libyaml reads as it parses: the character is found here
        raise _control_character(label, text, exc) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Location(label, mark.line + 1, mark.column + 1) if mark else Location(label)
        reason = " ".join(filter(None, [exc.context, exc.problem]))
        raise UnreadableSpec(where, f"is not valid YAML: {reason}") from None
    except yaml.YAMLError as exc:
        raise UnreadableSpec(Location(label), f"is not valid YAML: {exc}") from None
    except RecursionError:
        raise UnreadableSpec(Location(label), f"nests deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    if root is None:
        raise UnreadableSpec(Location(label), "is empty; a spec is a mapping with at least task, model and data")
    if not isinstance(root, yaml.MappingNode):
        raise UnreadableSpec(_where(label, root), "must be a mapping of keys to values (task: ..., model: ..., data: ...)")
    sha = hashlib.sha256(raw).hexdigest()
    converter = _Converter(label, loader)
    data = converter.convert(root, (), 0)
    return SourceDoc(data=data, file=label, sha256=sha, positions=converter.positions)


def _control_character(label: str, text: str, exc: yaml.reader.ReaderError) -> UnreadableSpec:
    """The error for a character YAML forbids (NUL, say), at its line and column."""
    line = text.count("\n", 0, exc.position) + 1
    col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
    return UnreadableSpec(Location(label, line, col), f"holds the control character {exc.character:#06x}; YAML forbids it")


def load_value(text: str, label: str) -> Any:
    """`text` read as one YAML value, as `yaml.safe_load` reads it, within a spec's limits on nesting and
    expansion (`UnreadableSpec` at `label` beyond them); text that is not YAML is returned as it is."""
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters here
    except yaml.YAMLError:
        return text
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_bounds(node, label)
        return loader.construct_document(node)
    except RecursionError:
        raise UnreadableSpec(Location(label), f"nests deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError:
        return text
    finally:
        loader.dispose()


def _check_bounds(root: yaml.Node, label: str) -> None:
    """Refuse a composed value that nests deeper than MAX_DEPTH or expands (through aliases) past MAX_NODES."""
    pending = [(root, 1)]  # a value stands under a key: one level down, as in a spec file
    seen = 0
    while pending:
        node, depth = pending.pop()
        seen += 1
        if seen > MAX_NODES:
            raise UnreadableSpec(Location(label), f"expands to more than {MAX_NODES} values (aliases that multiply?); refused")
        if depth > MAX_DEPTH:
            raise UnreadableSpec(Location(label), f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.SequenceNode):
            pending += [(item, depth + 1) for item in node.value]
        elif isinstance(node, yaml.MappingNode):
            pending += [(part, depth + 1) for pair in node.value for part in pair]


def _where(label: str, node: yaml.Node) -> Location:
    return Location(label, node.start_mark.line + 1, node.start_mark.column + 1)


class _Converter:
    """Turns composed nodes into Python values, bounded in size and depth."""

    def __init__(self, label: str, loader: yaml.SafeLoader) -> None:  # or CSafeLoader
        self.label = label
        self.loader = loader
        self.nodes = 0
        self.positions: dict[Path_, Location] = {}

    def convert(self, node: yaml.Node, path: Path_, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise UnreadableSpec(
                _where(self.label, node),
                f"expands to more than {MAX_NODES} values (aliases that multiply, a 'YAML bomb'?); refused",
            )
        if depth > MAX_DEPTH:
            raise UnreadableSpec(_where(self.label, node), f"nests deeper than {MAX_DEPTH} levels")
        if node.tag not in _CORE_TAGS:
            raise UnreadableSpec(_where(self.label, node), f"uses the tag {node.tag!r}; specs allow plain YAML values only")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        if node.tag.endswith(":timestamp") or _yaml11_only(node):
            return node.value
        return self.loader.construct_object(node)

    def _mapping(self, node: yaml.MappingNode, path: Path_, depth: int) -> dict[str, Any]:
        own = {id(key) for key, _ in node.value}
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            raise UnreadableSpec(_where(self.label, node), f"has a bad merge key: {exc.problem}") from None
        out: dict[str, Any] = {}
        merged: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith((":map", ":seq")):
                raise UnreadableSpec(_where(self.label, key_node), "keys must be plain names")
            key = str(self.convert(key_node, path, depth + 1))
            where = _where(self.label, key_node)
            if key in out and key not in merged:
                first = self.positions[(*path, key)]
                raise UnreadableSpec(where, f"key {_dotted((*path, key))!r} is given twice (first at line {first.line})")
            merged.discard(key)
            if id(key_node) not in own:
                merged.add(key)
            self.positions[(*path, key)] = where
            out[key] = self.convert(value_node, (*path, key), depth + 1)
        return out


def _yaml11_only(node: yaml.Node) -> bool:
    """Plain scalars that only YAML 1.1 reads as booleans or numbers; specs keep them as text (YAML 1.2).

    `evaluation_strategy: no` means "no", `apply_lora: yes` is an error rather than a silent true,
    and a time limit `4:00:00` stays a time instead of the base-60 number 14400.
    """
    if not isinstance(node, yaml.ScalarNode) or node.style:  # quoted: "" style with libyaml, None with Python
        return False
    if node.tag.endswith(":bool"):
        return node.value.lower() not in ("true", "false")
    return node.tag.endswith((":int", ":float")) and ":" in node.value


def _dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)
