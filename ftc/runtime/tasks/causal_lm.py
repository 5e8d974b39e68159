"""Causal language modelling: finetune a decoder-only model (Llama, Mistral, Qwen2, GPT-2, SmolLM) on text or chats.

Data. A data file holds plain text or chats, as its first row says (chat where both columns are there):
- chat: data.messages_key (default "messages") holds a conversation, a non-empty list of
  {"role": ..., "content": ...} objects with text roles and contents, at least one of them an
  "assistant" turn;
- text: data.text_key (default "text") holds non-empty text.
Every row must have the column of its file's format; a DataError names the file and line
otherwise, before any model is loaded. Without a validation file, a seeded
data.validation_split_ratio of the training rows is held out.

Text is tokenized with the tokenizer's special tokens (BOS where the tokenizer adds one) and EOS
appended; every token is a label.

Chats are rendered with the tokenizer's chat template (a tokenizer without one is refused) and
tokenized without adding special tokens (the template writes them). The loss is on the
assistant's turns only: labels are -100 everywhere else. The assistant tokens are found
- where the template marks them with {% generation %} ... {% endgeneration %}: with the
  tokenizer's return_assistant_tokens_mask (the template's own statement of what to learn);
- otherwise (most templates, SmolLM2's and Llama's among them) by rendering prefixes: for an
  assistant message k, the conversation before it with the generation prompt (messages[:k],
  add_generation_prompt) ends where the reply begins, and the conversation through it
  (messages[:k+1]) ends where its turn ends. The characters between (the reply and the
  template's end-of-turn marker, <|im_end|> or <|eot_id|>, so the model learns to stop) are an
  assistant span; tokens overlapping a span (by the fast tokenizer's offsets) are labelled.
  Each such render must begin the full render: a template that rewrites earlier turns (e.g.
  drops their reasoning) gets a DataError naming the row.

Length: samples longer than data.max_seq_length tokens (alias context_length; default 4096, or the
model's maximum when smaller; -1: the model's maximum) are cut at the end, with a warning that
counts them; a conversation left without an assistant token is dropped, with a warning. A text (or
a message's content) is first cut to ftc.runtime.data.char_bound characters, far more than
max_seq_length tokens cover, so a huge row costs bounded memory and a row under the limit keeps its
ids. Tokenizing is a `Dataset.map` cached by fingerprint (ftc.runtime.data.map_rows), in
data.preprocessing_num_workers processes.

Streaming (data.streaming, with training.max_steps): the training file is read as an
IterableDataset, tokenized and packed batch by batch (data.preprocess_batch_size rows, best fit
within the batch) as training reads it; a bad row stops training with a DataError naming its line.
The validation file (required) and the test file are prepared whole.

Batching (data.batching_strategy):
- packing (the default): whole samples are packed, best fit decreasing, into rows of at most
  max_seq_length tokens. position_ids restart at 0 with each sample, the first label of each
  sample is -100 (the last token of one sample does not predict the next one's first), and
  there is no attention_mask: transformers' masking utilities then see the packed samples in
  the position_ids and build a block-diagonal causal mask (sdpa, eager, flex attention), so no
  token attends to another sample and each sample's logits are those it has alone. Flash
  attention finds the samples in a single flattened row only, so with flash_attention_* the
  rows of a batch are concatenated into one (as transformers' DataCollatorWithFlattening).
  Before packing, the model is checked: where the logits of a sample inside a packed row differ
  from its logits alone (a model whose masks ignore position_ids), and with prefix tuning (its
  past key values turn the detection off), the run falls back to padding, with a warning.
- padding: one sample per row, each batch padded to its longest sample (to max_seq_length with
  data.pad_to_max_length); attention_mask 0 and labels -100 on the padding.
Validation and test data are batched the same way.

Metrics: the validation loss (the model's token cross-entropy) and `perplexity`, exp of the
validation loss, which the shared trainer adds (no logits are gathered); lower is better (with
metric_for_best_model: perplexity the best checkpoint is the lowest). transformers' causal LM
losses divide by the Trainer's num_items_in_batch, so `loss_uses_num_items` is True.
"""

from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass
from typing import Any

from ftc.runtime.config import RunConfig
from ftc.runtime.data import (
    RowError,
    Table,
    char_bound,
    map_rows,
    read_table,
    require_columns,
    seeded_split,
    spec_data_paths,
    stream_table,
    warn_cut,
)
from ftc.runtime.errors import DataError, RuntimeUserError
from ftc.runtime.tasks import Prepared
from ftc.runtime.tasks.seq2seq import texts
from ftc.spec.sections import LLM_MAX_SEQ_LENGTH

log = logging.getLogger("ftc.runtime")

IGNORE = -100  # label of tokens without loss
CHAT, TEXT = "chat", "text"
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")

Sample = tuple[list[int], list[int]]  # (input_ids, labels)


# --------------------------------------------------------------------------- data


@dataclass
class LMTable:
    """A data file and its format: CHAT (messages_key) or TEXT (text_key)."""

    table: Table
    format: str
    streamed: bool = False  # a stream (data.streaming): an IterableDataset, read as training goes

    def __len__(self) -> int:
        return len(self.table)


@dataclass
class LMData:
    train: LMTable
    validation: LMTable
    test: LMTable | None
    split_from_train: bool = False


def table_format(table: Table, cfg: RunConfig, first: dict[str, Any] | None = None) -> str:
    """CHAT or TEXT, from the columns of the first row (`first`, else read from the table); DataError when it
    has neither."""
    d = cfg.spec.data
    first = table.rows[0] if first is None else first
    if first.get(d.messages_key) is not None:
        return CHAT
    if first.get(d.text_key) is not None:
        return TEXT
    known = ", ".join(repr(k) for k, v in first.items() if v is not None) or "none"
    raise DataError(
        f"{table.role} data file {table.where(0)}: missing column {d.messages_key!r} (chat messages) or "
        f"{d.text_key!r} (text) (columns: {known})"
    )


def conversation(table: Table, i: int, key: str, value: Any = None) -> list[dict[str, str]]:
    """Row i's messages (`value`, else read from the table): a non-empty list of {role, content} texts with an
    assistant turn."""
    value = table.rows[i][key] if value is None else value
    where = f"{table.role} data file {table.where(i)}: column {key!r}"
    if not isinstance(value, list) or not value:
        what = "an empty list" if isinstance(value, list) else type(value).__name__
        raise DataError(f"{where} must hold a list of messages ({{role, content}} objects), not {what}")
    for n, message in enumerate(value, start=1):
        if not isinstance(message, dict) or not {"role", "content"} <= set(message):
            raise DataError(f"{where}: message {n} must be an object with 'role' and 'content', not {message!r:.80}")
        for field in ("role", "content"):
            if not isinstance(message[field], str):
                raise DataError(f"{where}: message {n} {field} must be text, not {type(message[field]).__name__}")
    if not any(m["role"] == "assistant" for m in value):
        roles = ", ".join(dict.fromkeys(m["role"] for m in value))
        raise DataError(f"{where} has no assistant message (roles: {roles}): nothing to learn")
    return value


def check_table(table: Table, cfg: RunConfig) -> LMTable:
    fmt = table_format(table, cfg)
    key = cfg.spec.data.messages_key if fmt == CHAT else cfg.spec.data.text_key
    require_columns(table, [key])
    if fmt == CHAT:
        for i, value in enumerate(table.column(key)):
            conversation(table, i, key, value)
    else:
        texts(table, key, "text")
    return LMTable(table, fmt)


# --------------------------------------------------------------------------- tokenizing


def encode_text(tokenizer: Any, text: str) -> Sample:
    """Token ids (special tokens, EOS appended) with every token a label."""
    ids = list(tokenizer(text)["input_ids"])
    if tokenizer.eos_token_id is not None and (not ids or ids[-1] != tokenizer.eos_token_id):
        ids.append(tokenizer.eos_token_id)
    return ids, list(ids)


def has_generation_tags(tokenizer: Any) -> bool:
    """Whether the chat template marks the assistant's text with {% generation %}."""
    return bool(_GENERATION_TAG.search(tokenizer.get_chat_template()))


def _render(tokenizer: Any, messages: list[dict[str, str]], prompt: bool = False) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt))


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered chat and the character spans of its assistant turns, found by rendering prefixes."""
    full = _render(tokenizer, messages)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = _render(tokenizer, messages[:k], prompt=True), _render(tokenizer, messages[: k + 1])
        if not (full.startswith(before) and full.startswith(through) and through.startswith(before)):
            raise ValueError(
                f"the chat template renders message {k + 1} differently inside the whole conversation "
                "than after the messages before it, so its tokens cannot be told apart"
            )
        if len(through) > len(before):
            spans.append((len(before), len(through)))
    return full, spans


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], tagged: bool) -> Sample:
    """Token ids of the rendered chat; labels on the assistant's tokens only."""
    if tagged:
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    else:
        full, spans = assistant_spans(tokenizer, messages)
        enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        mask = [any(end > s and start < e for s, e in spans) for start, end in enc["offset_mapping"]]
    return ids, [t if m else IGNORE for t, m in zip(ids, mask)]


class _Encoder:
    """Tokenizes data tables into samples of at most `length` tokens; warns about what was cut or dropped."""

    def __init__(self, cfg: RunConfig, tokenizer: Any, length: int) -> None:
        self.cfg, self.tokenizer, self.length = cfg, tokenizer, length
        self.keys = {CHAT: cfg.spec.data.messages_key, TEXT: cfg.spec.data.text_key}
        self.tagged: bool | None = None  # whether the chat template has generation tags, once checked

    def _chat_tagged(self) -> bool:
        """Whether the template has generation tags; RuntimeUserError where chats cannot be encoded."""
        if self.tagged is None:
            tok = self.tokenizer
            if not getattr(tok, "chat_template", None):
                raise RuntimeUserError(
                    "the data holds chat messages but the tokenizer has no chat template; give a tokenizer "
                    "with one (model.tokenizer_name) or write the conversations as text (data.text_key)"
                )
            self.tagged = has_generation_tags(tok)
            if not self.tagged and not getattr(tok, "is_fast", False):
                raise RuntimeUserError("chat data needs a fast tokenizer (tokenizer.json) to find the assistant tokens")
            how = "its {% generation %} tags" if self.tagged else "rendering the conversation's prefixes"
            log.info("chat data: the loss is on the assistant's tokens, found by %s", how)
        return self.tagged

    def _encode(self, data: LMTable) -> Any:
        """The table's samples as a Dataset (input_ids, labels cut to `length`; long: whether they were cut)."""
        key = self.keys[data.format]
        tagged = self._chat_tagged() if data.format == CHAT else False
        encode = _Encode(self.tokenizer, key, data.format, tagged, self.length)
        if data.format == TEXT:
            warn_cut(data.table, [key], encode.bound, self.length)
        return map_rows(data.table, encode, self.cfg, "tokenizing")

    def stream(self, data: LMTable, packed: bool) -> Any:
        """A stream's training rows (an IterableDataset): each batch of data.preprocess_batch_size rows
        tokenized, cut and packed (best fit within the batch) or left one sample a row, as it is read."""
        key = self.keys[data.format]
        tagged = self._chat_tagged() if data.format == CHAT else False
        encode = _Encode(self.tokenizer, key, data.format, tagged, self.length)
        log.info(
            "%s data file %s: streamed; samples longer than %d tokens are truncated and samples with nothing to "
            "learn dropped as they are read (not counted in advance)", data.table.role, data.table.path, self.length,
        )
        rows = _StreamRows(encode, data.table, packed, self.length)
        return data.table.dataset.select_columns([key]).map(
            rows, batched=True, with_indices=True, batch_size=self.cfg.spec.data.preprocess_batch_size, remove_columns=[key]
        )

    def __call__(self, data: LMTable) -> list[Sample]:
        where = f"{data.table.role} data file {data.table.path}"
        encoded = self._encode(data)
        cut = sum(encoded["long"])
        samples = [
            (ids, labels)
            for ids, labels in zip(encoded["input_ids"], encoded["labels"])
            if any(t != IGNORE for t in labels[1:])  # the first token is never predicted
        ]
        if cut:
            log.warning(
                "%s: %d of %d samples are longer than %d tokens (data.max_seq_length) and were truncated",
                where, cut, len(data), self.length,
            )
        if len(samples) < len(data):
            log.warning(
                "%s: %d samples have no assistant token within %d tokens and were dropped",
                where, len(data) - len(samples), self.length,
            )
        if not samples:
            raise DataError(f"{where}: no sample has a token to learn within {self.length} tokens")
        return samples


class _Encode:
    """The map function: each row's sample cut to `length` tokens, its text (or each message's content) first
    cut to `bound` characters (data.char_bound) so a huge row costs bounded memory."""

    def __init__(self, tokenizer: Any, key: str, fmt: str, tagged: bool, length: int) -> None:
        self.tokenizer, self.key, self.format, self.tagged, self.length = tokenizer, key, fmt, tagged, length
        self.bound = char_bound(tokenizer, length)

    def _sample(self, value: Any, index: int) -> Sample:
        if self.format == TEXT:
            if not isinstance(value, str) or not value:  # checked before, except in a stream
                raise RowError(index, f"text column {self.key!r} must hold text, not {value!r:.40}")
            return encode_text(self.tokenizer, value[: self.bound])
        try:
            messages = [{**m, "content": m["content"][: self.bound]} for m in value]
            return encode_chat(self.tokenizer, messages, self.tagged)
        except Exception as exc:  # the template's own errors (roles must alternate, ...)
            raise RowError(index, f"cannot render the chat: {exc}") from None

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "long": []}
        for value, index in zip(batch[self.key], indices):
            ids, labels = self._sample(value, index)
            out["input_ids"].append(ids[: self.length])
            out["labels"].append(labels[: self.length])
            out["long"].append(len(ids) > self.length)
        return out


class _StreamRows:
    """The map function of a stream: a batch of rows to packed (or padded) training rows; a bad row is a
    DataError at its file:line (the stream stops there)."""

    def __init__(self, encode: _Encode, table: Table, packed: bool, length: int) -> None:
        self.encode, self.table, self.packed, self.length = encode, table, packed, length

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        try:
            out = self.encode(batch, indices)
        except RowError as err:
            raise DataError(f"{self.table.role} data file {self.table.where(err.index)}: {err.message}") from None
        samples = [(ids, labels) for ids, labels in zip(out["input_ids"], out["labels"]) if any(t != IGNORE for t in labels[1:])]
        return packed_columns(samples, self.length) if self.packed else padded_columns(samples)


# --------------------------------------------------------------------------- packing and batches


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Sample indices per row: best fit decreasing into rows of at most `capacity` tokens."""
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row), sorted
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        at = bisect.bisect_left(free, (lengths[i], -1))
        if at < len(free):
            room, row = free.pop(at)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(i)
        if room - lengths[i] > 0:
            bisect.insort(free, (room - lengths[i], row))
    return rows


def packed_columns(samples: list[Sample], capacity: int) -> dict[str, list[list[int]]]:
    """input_ids, labels and position_ids of the packed rows (positions restart with each sample)."""
    columns: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "position_ids": []}
    for row in pack([len(ids) for ids, _ in samples], capacity):
        ids, labels, positions = [], [], []
        for i in row:
            sample_ids, sample_labels = samples[i]
            ids += sample_ids
            labels += [IGNORE, *sample_labels[1:]]
            positions += range(len(sample_ids))
        columns["input_ids"].append(ids)
        columns["labels"].append(labels)
        columns["position_ids"].append(positions)
    return columns


def padded_columns(samples: list[Sample]) -> dict[str, list[list[int]]]:
    return {"input_ids": [ids for ids, _ in samples], "labels": [labels for _, labels in samples]}


class LMCollator:
    """Batches of packed rows (input_ids, labels, position_ids; flattened into one row for flash
    attention) or of padded samples (input_ids, attention_mask, labels), as tensors."""

    def __init__(self, pad_id: int, packed: bool, flatten: bool = False, pad_to: int | None = None) -> None:
        self.pad_id, self.packed, self.flatten, self.pad_to = pad_id, packed, flatten, pad_to

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if self.packed and self.flatten:
            batch = {k: [sum((list(f[k]) for f in features), [])] for k in ("input_ids", "labels", "position_ids")}
            return {k: torch.tensor(v) for k, v in batch.items()}
        width = max(len(f["input_ids"]) for f in features)
        if self.pad_to and not self.packed:
            width = max(width, self.pad_to)
        batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
        batch.update({"position_ids": []} if self.packed else {"attention_mask": []})
        for f in features:
            n, pad = len(f["input_ids"]), width - len(f["input_ids"])
            batch["input_ids"].append([*f["input_ids"], *[self.pad_id] * pad])
            batch["labels"].append([*f["labels"], *[IGNORE] * pad])
            if self.packed:  # the padding is a sequence of its own: no real token attends to it
                batch["position_ids"].append([*f["position_ids"], *range(pad)])
            else:
                batch["attention_mask"].append([1] * n + [0] * pad)
        return {k: torch.tensor(v) for k, v in batch.items()}


def keeps_samples_apart(model: Any) -> bool:
    """Whether two samples packed in one row (position_ids restarting, no attention_mask) get the
    logits each has alone: a forward pass of 7 tokens."""
    import torch

    vocab = int(model.get_input_embeddings().num_embeddings)
    first, second = [1 % vocab, 2 % vocab, 3 % vocab], [4 % vocab, 5 % vocab, 6 % vocab, 7 % vocab]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # a forward that refuses position_ids (TypeError) cannot pack either
            packed = model(
                input_ids=torch.tensor([first + second], device=device),
                position_ids=torch.tensor([[0, 1, 2, 0, 1, 2, 3]], device=device),
                use_cache=False,
            ).logits[0, len(first) :].float()
            alone = model(input_ids=torch.tensor([second], device=device), use_cache=False).logits[0].float()
    except TypeError:
        return False
    finally:
        model.train(was_training)
    tolerance = 1e-4 if next(model.parameters()).dtype == torch.float32 else 5e-2
    return bool((packed - alone).abs().max() <= tolerance * (1 + alone.abs().max()))


def batching(cfg: RunConfig, model: Any) -> tuple[str, bool]:
    """(batching strategy used, whether packed rows are flattened into one row per batch)."""
    s = cfg.spec
    if s.data.batching_strategy != "packing":
        return "padding", False
    if (s.lora.apply_lora or s.lora.from_peft_checkpoint) and s.lora.peft_method == "prefix":
        log.warning("batching_strategy packing: prefix tuning cannot keep packed samples apart; padding instead")
        return "padding", False
    if str(getattr(model.config, "_attn_implementation", "")).startswith("flash"):
        return "packing", True  # flash attention separates the samples of one flattened row
    if not keeps_samples_apart(model):
        log.warning(
            "batching_strategy packing: model type %r lets packed samples attend to each other "
            "(its attention masks ignore position_ids); padding instead", getattr(model.config, "model_type", "?"),
        )
        return "padding", False
    return "packing", False


# --------------------------------------------------------------------------- the task


class CausalLM:
    name = "causal_lm"

    def load_data(self, cfg: RunConfig) -> LMData:
        d = cfg.spec.data
        paths = spec_data_paths(cfg)
        if d.streaming:
            return self._load_stream(cfg, paths)
        train = check_table(read_table(paths["train"], "train"), cfg)
        validation = check_table(read_table(paths["validation"], "validation"), cfg) if "validation" in paths else None
        test = check_table(read_table(paths["test"], "test"), cfg) if "test" in paths else None
        split = validation is None
        if validation is None:
            kept, held = seeded_split(train.table, d.validation_split_ratio, cfg.spec.training.seed)
            train, validation = LMTable(kept, train.format), LMTable(held, train.format)
            log.info(
                "no validation file: holding out %d of %d training rows (validation_split_ratio %s, seed %d)",
                len(validation), len(train) + len(validation), d.validation_split_ratio, cfg.spec.training.seed,
            )
        return LMData(train, validation, test, split)

    def _load_stream(self, cfg: RunConfig, paths: dict[str, Any]) -> LMData:
        """data.streaming: the training file as a stream (its first row read for the format), the validation and
        test files read and checked whole."""
        if cfg.spec.training.max_steps <= 0:
            raise RuntimeUserError(
                "data.streaming: a stream has no length, so epochs cannot be counted; set training.max_steps "
                "(or turn streaming off)"
            )
        if "validation" not in paths:
            raise RuntimeUserError(
                "data.streaming: validation rows cannot be held out of a stream; give data.validation_file_path"
            )
        stream = stream_table(paths["train"], "train")
        first = next(iter(stream.dataset), None)
        if first is None:
            raise DataError(f"train data file {stream.path} has no rows")
        train = LMTable(stream, table_format(stream, cfg, first), streamed=True)
        validation = check_table(read_table(paths["validation"], "validation"), cfg)
        test = check_table(read_table(paths["test"], "test"), cfg) if "test" in paths else None
        return LMData(train, validation, test)

    def prepare(self, cfg: RunConfig, data: LMData) -> Prepared:
        from transformers import AutoModelForCausalLM

        from ftc.runtime.models import ensure_pad_token, load_model, load_tokenizer, max_length

        tokenizer = load_tokenizer(cfg)
        model = load_model(AutoModelForCausalLM, cfg)
        ensure_pad_token(tokenizer, model)
        length = max_length(cfg, tokenizer, model.config, task_default=LLM_MAX_SEQ_LENGTH)
        encode = _Encoder(cfg, tokenizer, length)
        strategy, flatten = batching(cfg, model)
        if data.train.streamed:
            return self._prepared(cfg, model, tokenizer, data, encode, strategy, flatten, length)
        splits = {"train": encode(data.train), "validation": encode(data.validation)}
        if data.test is not None:
            splits["test"] = encode(data.test)
        datasets = {name: self._dataset(samples, strategy, length) for name, samples in splits.items()}
        train = datasets["train"]
        tokens = sum(len(ids) for ids, _ in splits["train"])
        log.info(
            "causal_lm: train %d samples (%s, %d tokens), validation %d%s; max_seq_length %d; batching %s%s",
            len(splits["train"]), data.train.format, tokens, len(splits["validation"]),
            f", test {len(splits['test'])}" if "test" in splits else "", length, strategy,
            f" ({len(train)} rows of up to {length} tokens, {tokens / max(1, len(train) * length):.0%} full)"
            if strategy == "packing" else "",
        )
        pad_to = length if cfg.spec.data.pad_to_max_length else None
        return Prepared(
            model=model,
            tokenizer=tokenizer,
            train_dataset=train,
            eval_dataset=datasets["validation"],
            test_dataset=datasets.get("test"),
            data_collator=LMCollator(tokenizer.pad_token_id, strategy == "packing", flatten, pad_to),
            compute_metrics=None,  # the trainer adds perplexity from the loss; no logits are gathered
            peft_task_type="CAUSAL_LM",
            headline_metric="perplexity",
            loss_uses_num_items=True,
            info={
                "max_seq_length": length,
                "batching_strategy": strategy,
                "data_format": data.train.format,
                "train_samples": len(splits["train"]),
                "train_tokens": tokens,
                "train_rows": len(train),
            },
        )

    def _prepared(
        self, cfg: RunConfig, model: Any, tokenizer: Any, data: LMData, encode: _Encoder, strategy: str, flatten: bool, length: int
    ) -> Prepared:
        """What a streamed run trains on: the training stream, the validation (and test) data prepared whole."""
        evaluation = {"validation": data.validation, **({"test": data.test} if data.test is not None else {})}
        datasets = {name: self._dataset(encode(table), strategy, length) for name, table in evaluation.items()}
        pad_to = length if cfg.spec.data.pad_to_max_length else None
        return Prepared(
            model=model,
            tokenizer=tokenizer,
            train_dataset=encode.stream(data.train, strategy == "packing"),
            eval_dataset=datasets["validation"],
            test_dataset=datasets.get("test"),
            data_collator=LMCollator(tokenizer.pad_token_id, strategy == "packing", flatten, pad_to),
            compute_metrics=None,
            peft_task_type="CAUSAL_LM",
            headline_metric="perplexity",
            loss_uses_num_items=True,
            info={"max_seq_length": length, "batching_strategy": strategy, "data_format": data.train.format, "streaming": True},
        )

    @staticmethod
    def _dataset(samples: list[Sample], strategy: str, length: int) -> Any:
        from datasets import Dataset

        return Dataset.from_dict(packed_columns(samples, length) if strategy == "packing" else padded_columns(samples))


TASK = CausalLM()
