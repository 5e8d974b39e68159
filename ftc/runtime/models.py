"""Loading tokenizers and pretrained models, shared by the tasks, with errors a user can act on."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ftc.runtime.config import RunConfig
from ftc.runtime.errors import RuntimeUserError

log = logging.getLogger("ftc.runtime")

# Files that mean "this folder has a tokenizer".
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
)
# model_max_length values this large mean "no limit set".
NO_LIMIT = 1_000_000


def model_source(cfg: RunConfig) -> str:
    """The model folder (absolute) or hub id."""
    ref = cfg.model_ref("model", "model_selector_output")
    assert ref is not None
    return ref


def tokenizer_source(cfg: RunConfig) -> str:
    return cfg.model_ref("model", "tokenizer_name") or model_source(cfg)


def _describe(cfg: RunConfig, name: str, ref: str) -> str:
    if os.path.isabs(ref):
        return f"folder {ref}"
    local = cfg.path("model", name)
    return f"{ref!r} (no local folder {local}, so it was looked up as a hub id)"


def load_tokenizer(cfg: RunConfig) -> Any:
    """AutoTokenizer from model.tokenizer_name or the model folder; a clear error when there is none."""
    from transformers import AutoTokenizer

    ref = tokenizer_source(cfg)
    name = "tokenizer_name" if cfg.spec.model.tokenizer_name else "model_selector_output"
    gguf = cfg.spec.model.gguf_file
    if os.path.isdir(ref) and not gguf and not any((Path(ref) / f).exists() for f in TOKENIZER_FILES):
        raise RuntimeUserError(
            f"no tokenizer in the model folder {ref} (looked for {', '.join(TOKENIZER_FILES)}); "
            "save one there or set model.tokenizer_name"
        )
    kwargs: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, **kwargs)
    except Exception as exc:  # OSError, ValueError, hub errors
        raise RuntimeUserError(f"cannot load the tokenizer from {_describe(cfg, name, ref)}: {_first_line(exc)}") from None
    return tokenizer


def load_model(auto_class: Any, cfg: RunConfig, **kwargs: Any) -> Any:
    """`auto_class.from_pretrained` on the spec's model with the spec's loading options."""
    import torch

    ref = model_source(cfg)
    spec = cfg.spec
    if spec.model.gguf_file:
        kwargs["gguf_file"] = spec.model.gguf_file
    if spec.precision.pure_bf16:
        kwargs["dtype"] = torch.bfloat16
    if spec.precision.use_fast_kernels:
        kwargs["attn_implementation"] = _fast_attention()
    try:
        model = auto_class.from_pretrained(ref, **kwargs)
    except Exception as exc:
        raise RuntimeUserError(
            f"cannot load the model from {_describe(cfg, 'model_selector_output', ref)}: {_first_line(exc)}"
        ) from None
    return model


def _fast_attention() -> str:
    import importlib.util

    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def max_length(cfg: RunConfig, tokenizer: Any, model_config: Any) -> int:
    """data.max_seq_length, where -1 means the tokenizer's maximum; never more than the model's positions."""
    positions = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    tok_max = getattr(tokenizer, "model_max_length", None)
    tok_max = tok_max if tok_max and tok_max < NO_LIMIT else None
    limits = [v for v in (tok_max, positions) if v]
    cap = min(limits) if limits else 512
    wanted = cfg.spec.data.max_seq_length
    if wanted == -1 or wanted is None:
        return cap
    if wanted > cap:
        log.warning("data.max_seq_length %d is more than the model takes; using %d", wanted, cap)
        return cap
    return wanted


def ensure_pad_token(tokenizer: Any, model: Any) -> None:
    """Decoder models (GPT-2, Llama) have no pad token: pad with EOS, and tell the model."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise RuntimeUserError("the tokenizer has neither a pad token nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
