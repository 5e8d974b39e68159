"""The loader: positions of keys, and hostile or broken documents refused with file:line:col."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ftc.errors import UnreadableSpec
from ftc.spec.loader import MAX_BYTES, load_spec_file, parse_spec_text


def test_positions_of_nested_keys() -> None:
    doc = parse_spec_text(b"task: x\nlora:\n  lora_r: 4\n  target_modules: [a, b]\n", "s.yaml")
    assert doc.data == {"task": "x", "lora": {"lora_r": 4, "target_modules": ["a", "b"]}}
    assert str(doc.positions[("lora", "lora_r")]) == "s.yaml:3:3"
    assert str(doc.locate(("lora", "lora_r", "nonexistent"))) == "s.yaml:3:3"
    assert str(doc.locate(("missing",))) == "s.yaml:1:1"


def test_digest_is_of_the_bytes() -> None:
    assert parse_spec_text(b"a: 1\n", "x").sha256 != parse_spec_text(b"a: 1 \n", "x").sha256


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        (b"task: [unclosed\n", "s.yaml:2:1", "not valid YAML"),
        (b"- a\n- b\n", "s.yaml:1:1", "must be a mapping"),
        (b"just a string\n", "s.yaml:1:1", "must be a mapping"),
        (b"", "s.yaml", "is empty"),
        (b"a: 1\nb: 2\na: 3\n", "s.yaml:3:1", "given twice (first at line 1)"),
        (b"a: !!python/object:os.system {}\n", "s.yaml:1:4", "tag"),
        (b"a: !!binary aGVsbG8=\n", "s.yaml:1:4", "tag"),
        (b"a: \xff\xfe\n", "s.yaml:1:4", "not UTF-8"),
        (b"? [a, b]\n: 1\n", "s.yaml:1:3", "plain names"),
        (b"a: 1\n---\nb: 2\n", "s.yaml:2:1", "single document"),
    ],
)
def test_broken_documents(text: bytes, where: str, words: str) -> None:
    with pytest.raises(UnreadableSpec) as info:
        parse_spec_text(text, "s.yaml")
    assert str(info.value.problem.location) == where
    assert words in str(info.value)


def test_yaml_bomb_refused_fast() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]" for i in range(1, 9)]
    start = time.perf_counter()
    with pytest.raises(UnreadableSpec, match="YAML bomb"):
        parse_spec_text("\n".join(lines).encode(), "bomb.yaml")
    assert time.perf_counter() - start < 30  # bounded work, not a timing assertion on speed


def test_deep_nesting_refused() -> None:
    with pytest.raises(UnreadableSpec, match="nests deeper"):
        parse_spec_text(("a: " + "[" * 200 + "]" * 200).encode(), "deep.yaml")


def test_large_file_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * MAX_BYTES + b"\n")
    with pytest.raises(UnreadableSpec, match="at most"):
        load_spec_file(big)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(UnreadableSpec, match="cannot be read"):
        load_spec_file(tmp_path / "nope.yaml")
    with pytest.raises(UnreadableSpec, match="is a folder"):
        load_spec_file(tmp_path)


def test_merge_keys_and_anchors_still_work() -> None:
    doc = parse_spec_text(b"base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  y: 3\n", "m.yaml")
    assert doc.data["mine"] == {"x": 1, "y": 3}


def test_dates_stay_text() -> None:
    assert parse_spec_text(b"d: 2024-01-02\n", "d.yaml").data == {"d": "2024-01-02"}


def test_only_true_and_false_are_booleans() -> None:
    doc = parse_spec_text(b"a: no\nb: yes\nc: true\nd: False\ne: off\nf: 4:00:00\ng: 1:30\nh: 90\n", "b.yaml")
    assert doc.data == {"a": "no", "b": "yes", "c": True, "d": False, "e": "off", "f": "4:00:00", "g": "1:30", "h": 90}
