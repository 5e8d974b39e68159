"""QLoRA (precision.quantization): LoRA is turned on by the compiler, bitsandbytes' settings are
llama-recipes' and Azure ML's, and the runtime refuses it on CPU before loading anything (training
a quantized model needs a CUDA GPU: the GPU check covers the training itself)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime.conftest import TINY_SPEC


def test_quantization_turns_lora_on_unless_the_spec_says_otherwise(project: Path) -> None:
    from ftc.compiler.build import load_resolved

    def resolved(extra: str) -> tuple[bool, str]:
        (project / "spec.yaml").write_text(TINY_SPEC + extra)
        r = load_resolved(project / "spec.yaml")
        return r.spec.lora.apply_lora, r.sources["lora.apply_lora"]

    assert resolved("precision:\n  quantization: 4bit\n") == (True, "derived from precision.quantization")
    assert resolved("") == (False, "default")
    off, source = resolved("precision:\n  quantization: 4bit\nlora:\n  apply_lora: false\n")  # lint's to refuse
    assert off is False and source != "default"


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_bitsandbytes_settings(bits: str) -> None:
    import torch

    from ftc.runtime.models import quantization_config

    config = quantization_config(bits)
    if bits == "8bit":
        assert config.load_in_8bit and not config.load_in_4bit
    else:
        assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
        assert config.bnb_4bit_compute_dtype == torch.bfloat16


def test_refused_on_cpu_before_loading(compile_config: Callable[..., Path], run_inprocess: Callable[..., tuple[int, str, str]]) -> None:
    config = compile_config(TINY_SPEC + "resources:\n  device: cpu\n")  # lint refuses quantization on CPU
    code, _, err = run_inprocess(config, "--quantization", "4bit")
    assert code != 0
    assert "precision.quantization 4bit needs a CUDA GPU (bitsandbytes)" in err
    assert "Traceback" not in err and "Loading weights" not in err
