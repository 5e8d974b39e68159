"""Loading tokenizers and pretrained models, shared by the tasks, with errors a user can act on.

model.gguf_file: the model (and, unless model.tokenizer_name names another, its tokenizer) is read
from that GGUF file inside the model folder by transformers' GGUF support, which dequantizes the
weights into a plain, trainable transformers model (float32, or bf16 with pure_bf16); what is
saved after training is a normal model folder (safetensors), or the adapter.

precision.use_fast_kernels (alias flash_attention_2): the model is loaded with
attn_implementation "flash_attention_2" where a CUDA GPU and the flash_attn package are there,
else "sdpa" (PyTorch's fused scaled_dot_product_attention), logged. A model class that cannot use
the one asked for (transformers raises ValueError or ImportError: DeBERTa has no sdpa, flash_attn
may not build for the GPU) is loaded with the next one, and last with its default attention,
with a warning; the run does not fail for a speed setting. Without use_fast_kernels the
transformers default applies (sdpa where the model supports it, else eager).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ftc.runtime import storage
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
# An MLflow model folder has this file at its top; flavours that hold a transformers model folder.
MLMODEL_FILE = "MLmodel"
TRANSFORMERS_FLAVORS = ("transformers", "hftransformersv2", "hftransformers")
# model_max_length values this large mean "no limit set".
NO_LIMIT = 1_000_000


def model_source(cfg: RunConfig) -> str:
    """The model folder (absolute) or hub id."""
    return _source(cfg, "model_selector_output")


def tokenizer_source(cfg: RunConfig) -> str:
    if cfg.spec.model.tokenizer_name:
        return _source(cfg, "tokenizer_name", part="tokenizer")
    return _source(cfg, "model_selector_output", part="tokenizer")


def _source(cfg: RunConfig, name: str, part: str = "model") -> str:
    """model.`name` as a local folder or hub id: a URI is downloaded (once per node), and an MLflow model folder
    gives the folder of its weights or of its tokenizer (`part`). RuntimeUserError for a folder path
    (absolute, ./, ../, ~) that does not exist, which no hub could serve."""
    uri = cfg.uri("model", name)
    if uri is not None:
        ref = str(storage.cached_copy(uri, f"model.{name}"))
    else:
        ref = _local_source(cfg, name)
    if os.path.isdir(ref) and (Path(ref) / MLMODEL_FILE).is_file():
        weights, tokenizer = mlflow_model_parts(Path(ref), f"model.{name} {uri or ref}")
        return str(tokenizer if part == "tokenizer" else weights)
    return ref


def _local_source(cfg: RunConfig, name: str) -> str:
    ref = cfg.model_ref("model", name)
    assert ref is not None
    value = str(getattr(cfg.spec.model, name))
    if not os.path.exists(ref) and (os.path.isabs(value) or value.startswith(("./", "../", "~"))):
        what = "tokenizer" if name == "tokenizer_name" else "model"
        raise RuntimeUserError(f"{what} folder {cfg.path('model', name)} not found (model.{name})")
    return ref


def mlflow_model_parts(folder: Path, what: str) -> tuple[Path, Path]:
    """(weights folder, tokenizer folder) of an MLflow model folder: MLflow's transformers flavour (`model/`,
    `components/tokenizer/`), Azure ML registry models (`data/model/`, `data/tokenizer/`), or ftc's own
    python_function model (the transformers folder in its `hf_model` artifact); RuntimeUserError otherwise."""
    flavors = _mlmodel_flavors(folder, what)
    transformers = next((flavors[f] or {} for f in TRANSFORMERS_FLAVORS if f in flavors), None)
    artifact = (((flavors.get("python_function") or {}).get("artifacts") or {}).get("hf_model") or {}).get("path")
    if transformers is not None:
        weights = [str(transformers.get("model_binary") or "model"), "data/model", "model"]
        tokenizers = ["components/tokenizer", "data/tokenizer"]
    elif artifact:
        weights, tokenizers = [str(artifact)], []
    else:
        raise RuntimeUserError(
            f"{what} is an MLflow model of flavour {', '.join(flavors) or 'none'}: ftc starts from MLflow models of the "
            f"transformers flavour ({', '.join(TRANSFORMERS_FLAVORS)}) only"
        )
    model = next((folder / w for w in weights if (folder / w / "config.json").is_file()), None)
    if model is None:
        raise RuntimeUserError(
            f"{what} is an MLflow transformers model without its weights (no config.json in {', '.join(dict.fromkeys(weights))}): "
            "it was saved with save_pretrained=False; save it with its weights or give the model folder"
        )
    tokenizer = next((folder / t for t in tokenizers if _has_tokenizer(folder / t)), model)
    return model, tokenizer


def _mlmodel_flavors(folder: Path, what: str) -> dict[str, Any]:
    """The `flavors` mapping of `folder/MLmodel`; RuntimeUserError when it cannot be read."""
    import yaml

    path = folder / MLMODEL_FILE
    try:
        mlmodel = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RuntimeUserError(f"{what}: cannot read {path}: {_first_line(exc)}") from None
    flavors = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
    if not isinstance(flavors, dict):
        raise RuntimeUserError(f"{what}: {path} names no flavors: not an MLflow model")
    return flavors


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f).exists() for f in TOKENIZER_FILES)


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
    # The GGUF file holds the tokenizer of its model; a tokenizer_name folder has its own files.
    gguf = None if cfg.spec.model.tokenizer_name else _gguf_file(cfg)
    if os.path.isdir(ref) and not gguf and not _has_tokenizer(Path(ref)):
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
    gguf = _gguf_file(cfg)
    if gguf:
        kwargs["gguf_file"] = gguf
        kwargs.setdefault("quantization_config", _gguf_dequantized())
    if spec.precision.pure_bf16:
        kwargs["dtype"] = torch.bfloat16
    if spec.precision.quantization:
        kwargs["quantization_config"] = quantization_config(spec.precision.quantization)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # each rank its own GPU
    wanted = fast_attention() if spec.precision.use_fast_kernels else []
    refused: list[str] = []
    for attn in [*wanted, None]:  # None: the model's default attention
        try:
            model = auto_class.from_pretrained(ref, **kwargs, **({"attn_implementation": attn} if attn else {}))
        except (ValueError, ImportError) as exc:
            if attn is None:
                raise _load_error(cfg, ref, exc) from None
            refused.append(f"{attn} ({_first_line(exc)})")
            continue
        except Exception as exc:
            raise _load_error(cfg, ref, exc) from None
        break
    if wanted:
        got = getattr(model.config, "_attn_implementation", None)
        if refused:
            log.warning(
                "precision.use_fast_kernels: the model cannot use %s; it uses %s attention",
                "; nor ".join(refused), got,
            )
        else:
            log.info("precision.use_fast_kernels: %s attention", got)
    return model


def _load_error(cfg: RunConfig, ref: str, exc: BaseException) -> RuntimeUserError:
    return RuntimeUserError(
        f"cannot load the model from {_describe(cfg, 'model_selector_output', ref)}: {_first_line(exc)}"
    )


def _gguf_file(cfg: RunConfig) -> str | None:
    """model.gguf_file, checked to be in the model folder (or an existing file) when the model is local."""
    gguf = cfg.spec.model.gguf_file
    if not gguf:
        return None
    folder = model_source(cfg)
    if os.path.isdir(folder) and not (Path(folder) / gguf).is_file() and not (os.path.isabs(gguf) and os.path.isfile(gguf)):
        found = sorted(p.name for p in Path(folder).glob("*.gguf"))
        raise RuntimeUserError(
            f"model.gguf_file {gguf} is not in the model folder {folder} "
            f"({'its GGUF files: ' + ', '.join(found) if found else 'it holds no .gguf file'})"
        )
    return gguf


def quantization_config(bits: str) -> Any:
    """bitsandbytes settings of QLoRA (llama-recipes, Azure ML): 4-bit NF4 with double quantization and
    bf16 compute, or 8-bit."""
    import torch
    from transformers import BitsAndBytesConfig

    if bits == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
    )


def _gguf_dequantized() -> Any:
    """transformers 5 loads a GGUF file through a quantizer that marks the model quantized and not
    trainable (the Trainer refuses it) even where it unpacks every weight; dequantize=True unpacks
    them into a plain dense model with no quantization left on it, which trains and saves."""
    try:
        from transformers import GgufConfig
    except ImportError:  # transformers without the GGUF quantizer dequantizes anyway
        return None
    return GgufConfig(dequantize=True)


def fast_attention() -> list[str]:
    """The attention implementations use_fast_kernels asks for, best first: flash attention where it
    can run (a CUDA GPU and the flash_attn package), then sdpa."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        why = "there is no CUDA GPU"
    elif importlib.util.find_spec("flash_attn") is None:
        why = "the flash_attn package is not installed (pip install flash-attn)"
    else:
        return ["flash_attention_2", "sdpa"]
    log.info("precision.use_fast_kernels: no flash attention, as %s; sdpa instead", why)
    return ["sdpa"]


def max_length(cfg: RunConfig, tokenizer: Any, model_config: Any, task_default: int | None = None) -> int:
    """data.max_seq_length, where -1 means the tokenizer's maximum; never more than the model's positions.

    A value equal to the task's own default (causal_lm's 4096) yields to a smaller maximum without a warning."""
    positions = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    tok_max = getattr(tokenizer, "model_max_length", None)
    tok_max = tok_max if tok_max and tok_max < NO_LIMIT else None
    limits = [v for v in (tok_max, positions) if v]
    cap = min(limits) if limits else 512
    wanted = cfg.spec.data.max_seq_length
    if wanted == -1 or wanted is None:
        return cap
    if wanted > cap:
        if wanted != task_default:
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
