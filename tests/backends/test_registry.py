"""Targets are found in ftc/backends and through the `ftc.backends` entry-point group."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ftc.backends import registry
from ftc.compiler.build import compile_spec
from ftc.spec import model


@pytest.fixture
def plugin_on_path(tmp_path: Path) -> Iterator[Path]:
    """A real installed distribution (dist-info + module + templates) that registers target `echo`."""
    site = tmp_path / "site"
    (site / "ftc_echo" / "templates").mkdir(parents=True)
    (site / "ftc_echo" / "__init__.py").write_text(
        textwrap.dedent(
            '''
            from pathlib import Path
            from ftc.backends.base import Backend
            from ftc.spec.fields import Section, param

            class EchoOptions(Section):
                """Echo target settings."""
                greeting: str = param("hello", "What to say.")

            class EchoBackend(Backend):
                name = "echo"
                summary = "says what it would run"
                Options = EchoOptions
                template_dir = str(Path(__file__).with_name("templates"))

                def variables(self, plan):
                    return {"greeting": plan.options.greeting, "task": plan.spec.task}
            '''
        )
    )
    (site / "ftc_echo" / "templates" / "echo.txt.j2").write_text("{{ greeting }} {{ task }}\n")
    dist = site / "ftc_echo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ftc-echo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ftc.backends]\necho = ftc_echo:EchoBackend\n")
    sys.path.insert(0, str(site))
    registry.backends.cache_clear()
    model.spec_model.cache_clear()
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("ftc_echo", None)
    registry.backends.cache_clear()
    model.spec_model.cache_clear()


def test_builtin_local_is_registered() -> None:
    assert "local" in registry.backends()
    with pytest.raises(KeyError, match="known targets"):
        registry.get_backend("nope")


def test_entry_point_plugin_adds_a_target_and_its_spec_section(
    plugin_on_path: Path, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    assert "echo" in registry.backends()
    spec = write_spec("task: causal_lm\nmodel: m\ndata: {train: t.jsonl}\ntargets:\n  echo:\n    greeting: hi\n")
    (folder,) = compile_spec(spec, ["echo"], tmp_path / "build")
    assert (folder / "echo.txt").read_text() == "hi causal_lm\n"
    assert (folder / "ftc.resolved.json").exists()
