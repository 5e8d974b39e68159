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
    "glpat-" + "xYz12AbC34dEf56GhI78",
    "npm_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6",
    "https://deploy:" + "Tr0ub4dor3@git.example.com/team/repo.git",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA" + "x" * 40 + "\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",  # cut short: the rest is masked too
]
NOT_TOKENS = [
    "models/all-MiniLM-L6-v2",
    "meta-llama/Llama-3.2-1B-Instruct",
    "sha256:" + "ab" * 32,
    "hf_hub_cache",
    "sk-learn",
    "/data/train.jsonl",
    "https://example.com/datasets/train.jsonl",
    "https://host.example.com:8443/v1/models?owner=a@b.c",
    "https://mirror@example.com/simple",
    "https://oauth2:${GITLAB_TOKEN}@gitlab.example.com/team/repo.git",
    "git@github.com:org/repo.git",
    "s3://bucket/runs/a:b@c",
    "npm_config_cache",
    "glpat-short",
    "-----BEGIN CERTIFICATE-----",
]


@pytest.mark.parametrize("token", TOKENS)
def test_tokens_are_recognised_and_masked(token: str) -> None:
    assert looks_like_secret(f"prefix {token} suffix")
    assert token not in mask_secrets(f"value: {token}")


@pytest.mark.parametrize("text", NOT_TOKENS)
def test_ordinary_values_are_not_tokens(text: str) -> None:
    assert not looks_like_secret(text)


def test_masking_keeps_the_rest_of_a_url() -> None:
    assert mask_secrets("https://deploy:Tr0ub4dor3@git.example.com/repo") == "https://***@git.example.com/repo"


def test_a_url_password_with_an_at_sign_is_masked_whole() -> None:
    assert mask_secrets("http://u:Tr0ub@dor3@127.0.0.1:9/ and a@b") == "http://***@127.0.0.1:9/ and a@b"


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


TOKEN = "hf_" + "abcdefghijklmnopqrstuvwxyz0123456789AB"
DATA = "data:\n  train_file_path: train.jsonl\n"
PLACES = {
    "a mapping key": f"{DATA}resources:\n  worker_resources:\n    {TOKEN}: 1\n",
    "a column name": f"{DATA}  label_key: {TOKEN}\n",
    "a path": f"{DATA}checkpointing:\n  output_dir: ../{TOKEN}\n",
    "an unknown key": f"{DATA}lora:\n  {TOKEN}: 1\n",
    "the name": f"{DATA}name: {TOKEN}\n",
}
COMMANDS = (["lint", "-t", "all"], ["lint", "--format", "sarif"], ["explain"], ["compile", "-t", "all", "-o", "{out}"])


@pytest.mark.parametrize("extra", PLACES.values(), ids=PLACES.keys())
def test_a_token_anywhere_is_flagged_and_never_echoed(extra: str, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    spec = tmp_path / "spec.yaml"
    spec.write_text("task: text_classification\nmodel: ./model\n" + extra)
    runner = CliRunner()
    for command in COMMANDS:
        result = runner.invoke(app, [command[0], str(spec), *(a.format(out=tmp_path / "b") for a in command[1:])])
        assert TOKEN not in result.output and "Traceback" not in result.output, command
        assert result.exit_code == 1 or command == ["explain"], (command, result.output)
    assert not (tmp_path / "b").exists()
