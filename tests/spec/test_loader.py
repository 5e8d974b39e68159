"""The loader: positions of keys, and hostile or broken documents refused with file:line:col."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

import pytest

from ftc.compiler.build import load_resolved
from ftc.errors import SpecError, UnreadableSpec
from ftc.spec.loader import MAX_BYTES, MAX_DEPTH, load_spec_file, load_value, parse_spec_text


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
        (b"task: x\nmodel: a\x00b\n", "s.yaml:2:9", "control character 0x0000"),
        (b"task: x\nmodel: 'a\x00b'\n", "s.yaml:2:10", "control character 0x0000"),
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


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom"])
def test_devices_are_refused_unread(device: str, tmp_path: Path) -> None:
    if not Path(device).exists():
        pytest.skip(f"no {device} here")
    link = tmp_path / "spec.yaml"
    link.symlink_to(device)
    for path in (Path(device), link):
        with pytest.raises(UnreadableSpec, match="is not a regular file"):
            load_spec_file(path)


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    with pytest.raises(UnreadableSpec, match="is not a regular file"):
        load_spec_file(fifo)


def test_read_stops_one_byte_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is larger than its size said (it grew, or a file system reports 0) is read no further."""
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" + b"#" * (3 * MAX_BYTES))
    real_fstat = os.fstat

    def small_fstat(fd: int) -> os.stat_result:
        info = list(real_fstat(fd))
        info[6] = 10  # st_size
        return os.stat_result(info)

    monkeypatch.setattr(os, "fstat", small_fstat)
    read: list[int] = []
    real_fdopen = os.fdopen

    class Counted:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.file = real_fdopen(*args, **kwargs)

        def __enter__(self) -> Self:
            return self

        def __exit__(self, *exc: object) -> None:
            self.file.close()

        def read(self, size: int = -1) -> bytes:
            data = self.file.read(size)
            read.append(len(data))
            return bytes(data)

    monkeypatch.setattr(os, "fdopen", Counted)
    with pytest.raises(UnreadableSpec, match=f"is more than {MAX_BYTES} bytes"):
        load_spec_file(big)
    assert read == [MAX_BYTES + 1]


def test_cli_on_dev_zero_and_a_long_name_exits_cleanly(tmp_path: Path) -> None:
    for path in ("/dev/zero", str(tmp_path / ("s" * 300 + ".yaml"))):
        done = subprocess.run([sys.executable, "-m", "ftc.cli", "lint", path], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stdout + done.stderr
    assert "File name too long" in done.stdout + done.stderr


def test_long_file_name_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(UnreadableSpec, match="cannot be read: File name too long"):
        load_spec_file(tmp_path / ("s" * 300 + ".yaml"))


def test_merge_keys_and_anchors_still_work() -> None:
    doc = parse_spec_text(b"base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  y: 3\n", "m.yaml")
    assert doc.data["mine"] == {"x": 1, "y": 3}


def test_dates_stay_text() -> None:
    assert parse_spec_text(b"d: 2024-01-02\n", "d.yaml").data == {"d": "2024-01-02"}


def test_only_true_and_false_are_booleans() -> None:
    doc = parse_spec_text(b"a: no\nb: yes\nc: true\nd: False\ne: off\nf: 4:00:00\ng: 1:30\nh: 90\n", "b.yaml")
    assert doc.data == {"a": "no", "b": "yes", "c": True, "d": False, "e": "off", "f": "4:00:00", "g": "1:30", "h": 90}


def test_broken_documents_are_reported_on_one_line() -> None:
    with pytest.raises(UnreadableSpec) as info:
        parse_spec_text(b"task: x\nmodel: a\x00b\n", "s.yaml")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("[a, {b: 1}]", ["a", {"b": 1}]), ("a: b: c", "a: b: c"), ("[unclosed", "[unclosed"), ("no", False),
     ("\x80", "\x80"), ("a\x00b", "a\x00b")],  # characters YAML refuses: the text as it is
)
def test_a_value_is_read_as_yaml_safe_load_reads_it(text: str, value: Any) -> None:
    assert load_value(text, "--set x") == value


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 3000])
def test_a_deep_value_is_refused_like_a_deep_file(depth: int) -> None:
    assert load_value("[" * MAX_DEPTH + "]" * MAX_DEPTH, "--set x")
    with pytest.raises(UnreadableSpec, match=f"--set x: nests deeper than {MAX_DEPTH} levels"):
        load_value("[" * depth + "]" * depth, "--set x")


def test_a_value_that_multiplies_through_aliases_is_refused() -> None:
    levels = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with pytest.raises(UnreadableSpec, match="expands to more than"):
        load_value("[" + ", ".join(levels) + "]", "--set x")


def test_a_deep_set_value_is_a_spec_error_at_a_short_location(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("task: text_classification\nmodel: ./m\ndata:\n  train_file_path: t.jsonl\n")
    with pytest.raises(SpecError) as info:
        load_resolved(spec, ["description=" + "[" * 3000 + "]" * 3000])
    (problem,) = info.value.problems
    assert problem.message == f"nests deeper than {MAX_DEPTH} levels" and problem.key == "description"
    assert str(problem.location).startswith("--set description=[[[") and len(str(problem.location)) <= 120
