"""Token-shaped strings are flagged by lint, masked in explain, and stop a compile before any artifact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftc.cli.app import app
from ftc.spec.secrets import looks_like_secret, mask_secrets

from tests.conftest import MINIMAL

TOKENS = [
    "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "sk-" + "proj-abcdefghijklmnopqrstuvwxyz0123",
    "ghp_" + "a" * 36,
    "github_pat_" + "A1b2" * 15,
    "AKIA" + "ABCDEFGHIJKLMNOP",
    "xoxb-" + "1234567890-abcdefghij",
    "AIza" + "SyA1234567890abcdefghijklmnopqrstuv",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "0123456789abcdef0123456789abcdef01234567",
    "DefaultEndpointsProtocol=https;AccountKey=" + "abcd1234" * 6 + "==",
]
NOT_TOKENS = [
    "models/all-MiniLM-L6-v2",
    "meta-llama/Llama-3.2-1B-Instruct",
    "sha256:" + "ab" * 32,
    "hf_hub_cache",
    "sk-learn",
    "/data/train.jsonl",
]


@pytest.mark.parametrize("token", TOKENS)
def test_tokens_are_recognised_and_masked(token: str) -> None:
    assert looks_like_secret(f"prefix {token} suffix")
    assert token not in mask_secrets(f"value: {token}")


@pytest.mark.parametrize("text", NOT_TOKENS)
def test_ordinary_values_are_not_tokens(text: str) -> None:
    assert not looks_like_secret(text)


@pytest.mark.parametrize("token", TOKENS)
def test_a_token_in_a_spec_never_reaches_output(token: str, write_spec: Callable[..., Path], tmp_path: Path) -> None:
    spec = write_spec(MINIMAL + f"description: 'uses {token}'\nenv:\n  vars:\n    API: '{token}'\n")
    runner = CliRunner()
    lint = runner.invoke(app, ["lint", str(spec)])
    assert lint.exit_code == 1 and "FTC106" in lint.output and token not in lint.output
    explain = runner.invoke(app, ["explain", str(spec)])
    assert token not in explain.output
    compiled = runner.invoke(app, ["compile", str(spec), "-t", "all", "-o", str(tmp_path / "build")])
    assert compiled.exit_code == 1 and token not in compiled.output
    assert not (tmp_path / "build").exists()
