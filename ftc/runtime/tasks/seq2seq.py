"""Translation and summarization: sequence-to-sequence finetuning (T5, BART, mBART and their kin).

One module serves both tasks (`TRANSLATION`, `SUMMARIZATION`); they differ only in the metrics
and in the T5 task prefix.

Data: the source text comes from data.source_key, the target from data.target_key; both must be
non-empty text in every row (a DataError names the file and line otherwise). Without a
validation file, a seeded data.validation_split_ratio of the training rows is held out.

Model: any `AutoModelForSeq2SeqLM` folder (or hub id). Sources and targets are both truncated at
data.max_seq_length tokens (-1: the tokenizer's maximum); padded label positions are -100, so
the loss ignores them (DataCollatorForSeq2Seq pads each batch).

T5 task prefixes. T5 checkpoints were trained multi-task with the task named in the input, so
for a T5 model (model_type t5, which includes FLAN-T5) every source is prefixed: with the
model's own `task_specific_params` prefix where its config has one for this task (the original
t5-small/base/large configs do: "summarize: ", "translate English to German: "), else with
"summarize: " for summarization and "translate <Source> to <Target>: " for translation when
data.source_lang and data.target_lang are set (codes such as en, de, en_XX or names such as
English are accepted; the prefix names the languages). T5 translation without languages, and
every other family (BART, mBART, mT5, Marian), get no prefix. The prefix is stored in
ftc_model_info.json (`source_prefix`) and, where a full or merged model is saved, in its config
(`task_specific_params`, where the next finetune finds it again), so inference can add it.

Language codes. A multilingual tokenizer (one with `src_lang`, as mBART, mBART-50, M2M100 and
NLLB have) needs data.source_lang and data.target_lang, which must be language tokens of the
tokenizer (mBART: en_XX, ro_RO). The tokenizer then marks sources and targets with them, and
generation starts the target with the target language: models whose targets end with the code
(mBART-cc25) start decoding with it (decoder_start_token_id), those whose targets begin with it
(mBART-50, M2M100, NLLB) force it as the first generated token (forced_bos_token_id).
Summarization with such a model keeps the tokenizer's own language (source_lang and target_lang
are translation parameters of the spec).

Evaluation generates (Seq2SeqTrainer, predict_with_generate): greedy or with the model's own
generation_config.num_beams, at most as many tokens as the longest tokenized target of the data
(train, validation and test) plus the decoder start token, so an untrained model that never
stops does not run to the model's maximum. Metrics, computed locally, without downloads:
- translation: `bleu`, sacrebleu's corpus BLEU (tokenize 13a; zh for a Chinese target language);
- summarization: `rouge1`, `rouge2`, `rougeL`, `rougeLsum`, rouge-score's F-measure x 100, mean
  over the examples, with the Porter stemmer (as transformers' run_summarization.py); rougeLsum
  splits sentences at . ! ? followed by a space. rouge-score's tokenizer keeps only [a-z0-9]:
  text in other scripts scores 0;
- both: `gen_len`, the mean number of generated tokens, and the loss on the references.

The models' losses (T5, BART, mBART: a CrossEntropyLoss mean over the batch's label tokens)
ignore the Trainer's num_items_in_batch, so `loss_uses_num_items` is False: the Trainer then
divides by gradient_accumulation_steps itself.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from ftc.runtime.config import RunConfig
from ftc.runtime.data import (
    Table,
    char_bound,
    map_rows,
    read_table,
    refuse_streaming,
    require_columns,
    seeded_split,
    spec_data_paths,
    warn_cut,
)
from ftc.runtime.errors import DataError, RuntimeUserError
from ftc.runtime.tasks import Prepared

log = logging.getLogger("ftc.runtime")

# Model families whose checkpoints expect a task prefix in the input.
PREFIX_MODEL_TYPES = ("t5",)
SUMMARIZE_PREFIX = "summarize: "

# Language names of the T5 translation prefix, by ISO 639-1 / 639-3 code.
LANGUAGE_NAMES: dict[str, str] = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "fi": "Finnish", "fr": "French", "hi": "Hindi", "hu": "Hungarian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "nl": "Dutch",
    "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish",
    "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
    "ara": "Arabic", "ces": "Czech", "deu": "German", "eng": "English", "spa": "Spanish", "fra": "French",
    "ita": "Italian", "jpn": "Japanese", "nld": "Dutch", "por": "Portuguese", "ron": "Romanian",
    "rus": "Russian", "zho": "Chinese",
}

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# --------------------------------------------------------------------------- metrics


def bleu(predictions: list[str], references: list[str], tokenize: str = "13a") -> dict[str, float]:
    """{"bleu": sacrebleu corpus BLEU (0-100)} of one reference per prediction."""
    import sacrebleu

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return {"bleu": 0.0}
    return {"bleu": float(sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score)}


def split_sentences(text: str) -> str:
    """One sentence per line, as rougeLsum wants (a split after . ! ? and space, no nltk data needed)."""
    return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """rouge1, rouge2, rougeL, rougeLsum: mean F-measure x 100 (rouge-score, Porter stemmer)."""
    from rouge_score import rouge_scorer, tokenizers

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return {name: 0.0 for name in ROUGE_TYPES}
    # The tokenizer given explicitly: the default one is logged through absl, which then installs a
    # root logging handler (every runtime message would be printed twice).
    scorer = rouge_scorer.RougeScorer(
        list(ROUGE_TYPES), use_stemmer=True, tokenizer=tokenizers.DefaultTokenizer(use_stemmer=True)
    )
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(split_sentences(reference), split_sentences(prediction))  # (target, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100.0 * total / len(predictions) for name, total in totals.items()}


def bleu_tokenizer(target_lang: str | None) -> str:
    """sacrebleu's tokenizer for the target language: zh for Chinese, else 13a (its default)."""
    return "zh" if target_lang and re.split(r"[_-]", target_lang)[0].lower() in ("zh", "zho") else "13a"


class Seq2SeqMetrics:
    """compute_metrics of the Trainer: decodes generated ids and references, scores them."""

    def __init__(self, tokenizer: Any, task: str, bleu_tokenize: str = "13a") -> None:
        self.tokenizer, self.task, self.bleu_tokenize = tokenizer, task, bleu_tokenize

    def decode(self, ids: Any) -> list[str]:
        import numpy as np

        ids = np.asarray(ids)
        pad = self.tokenizer.pad_token_id
        # -100: label padding and the Trainer's padding between batches; ids beyond the
        # tokenizer's vocabulary (T5's embedding has spare rows) mean nothing.
        ids = np.where((ids < 0) | (ids >= len(self.tokenizer)), pad, ids)
        return [t.strip() for t in self.tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        import numpy as np

        generated = eval_pred.predictions
        if isinstance(generated, (tuple, list)):
            generated = generated[0]
        generated = np.asarray(generated)
        predictions = self.decode(generated)
        references = self.decode(eval_pred.label_ids)
        scores = bleu(predictions, references, self.bleu_tokenize) if self.task == "translation" else rouge(
            predictions, references
        )
        pad = self.tokenizer.pad_token_id
        real = (generated >= 0) & (generated != pad)  # the decoder start token (pad for T5) is not counted
        scores["gen_len"] = float(real.sum(axis=-1).mean()) if len(generated) else 0.0
        return scores


# --------------------------------------------------------------------------- data


@dataclass
class Seq2SeqData:
    train: Table
    validation: Table
    test: Table | None
    split_from_train: bool = False


def texts(table: Table, key: str, what: str) -> list[str]:
    """The column `key` as text; DataError naming the file and line for non-text or empty values."""
    out = []
    for i, value in enumerate(table.column(key)):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise DataError(
                f"{table.role} data file {table.where(i)}: {what} column {key!r} must hold text, "
                f"not {type(value).__name__}"
            )
        if not value.strip():
            raise DataError(f"{table.role} data file {table.where(i)}: {what} column {key!r} is empty")
        out.append(value)
    return out


# --------------------------------------------------------------------------- languages and prefixes


def _language_key(code: str) -> str:
    """en_XX -> en, eng_Latn -> eng, English -> english."""
    return re.split(r"[_-]", code.strip())[0].lower()


def language_name(code: str) -> str:
    """English name of a language code for the T5 prefix (de, de_DE, deu -> German); else the code."""
    key = _language_key(code)
    if key in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[key]
    names = {n.lower(): n for n in LANGUAGE_NAMES.values()}
    return names.get(key, code.strip())


def source_prefix(task: str, model_config: Any, source_lang: str | None, target_lang: str | None) -> str:
    """The text put before every source: the model's own prefix for the task, the T5 default, or ""."""
    params = getattr(model_config, "task_specific_params", None) or {}
    if task == "summarization":
        keys = ["summarization"]
    elif source_lang and target_lang:
        keys = [f"translation_{source_lang}_to_{target_lang}",
                f"translation_{_language_key(source_lang)}_to_{_language_key(target_lang)}"]
    else:
        keys = []
    for key in keys:
        entry = params.get(key) if isinstance(params, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("prefix"), str):
            return str(entry["prefix"])
    if getattr(model_config, "model_type", None) not in PREFIX_MODEL_TYPES:
        return ""
    if task == "summarization":
        return SUMMARIZE_PREFIX
    if source_lang and target_lang:
        return f"translate {language_name(source_lang)} to {language_name(target_lang)}: "
    return ""


def is_multilingual(tokenizer: Any) -> bool:
    """Tokenizers that mark text with language codes (mBART, mBART-50, M2M100, NLLB)."""
    return hasattr(tokenizer, "src_lang")


def _language_id(tokenizer: Any, code: str, name: str) -> int:
    """The token id of a language code (M2M100 maps en to its token __en__ with get_lang_id)."""
    known = sorted(getattr(tokenizer, "lang_code_to_id", None) or [])
    hint = f" (it knows {', '.join(known[:12])}{' ...' if len(known) > 12 else ''})" if known else ""
    if known and code not in known:  # a code must not pass because it is also a word piece ("en")
        raise RuntimeUserError(f"data.{name} {code!r} is not a language code of the tokenizer{hint}")
    token_id = None
    if hasattr(tokenizer, "get_lang_id"):
        try:
            token_id = tokenizer.get_lang_id(code)
        except (KeyError, ValueError):
            token_id = None
    if token_id is None:
        token_id = tokenizer.convert_tokens_to_ids(code)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise RuntimeUserError(f"data.{name} {code!r} is not a language code of the tokenizer{hint}")
    return int(token_id)


def set_languages(cfg: RunConfig, tokenizer: Any, model: Any) -> dict[str, Any]:
    """Language codes for a multilingual tokenizer and the model's generation; {} for other models.

    Translation takes data.source_lang / data.target_lang (required); summarization keeps the
    tokenizer's own language (its target language is its source language).
    """
    d = cfg.spec.data
    if not is_multilingual(tokenizer):
        return {}
    if cfg.task == "translation":
        if not d.source_lang or not d.target_lang:
            raise RuntimeUserError(
                f"the tokenizer of {getattr(model.config, 'model_type', 'this model')!r} ({type(tokenizer).__name__}) "
                "marks text with language codes: set data.source_lang and data.target_lang (mBART: e.g. en_XX and ro_RO)"
            )
        _language_id(tokenizer, d.source_lang, "source_lang")
        source, target = d.source_lang, d.target_lang
    else:
        source = tokenizer.src_lang
        target = getattr(tokenizer, "tgt_lang", None) or source
    target_id = _language_id(tokenizer, target, "target_lang")
    tokenizer.src_lang = source
    tokenizer.tgt_lang = target
    sample = tokenizer(text_target="a")["input_ids"]
    if sample and sample[0] == target_id:  # mBART-50, M2M100, NLLB: "<lang> text </s>"
        model.generation_config.forced_bos_token_id = target_id
        how = "forced_bos_token_id"
    else:  # mBART-cc25: "text </s> <lang>", decoding starts with the language code
        model.config.decoder_start_token_id = target_id
        model.generation_config.decoder_start_token_id = target_id
        how = "decoder_start_token_id"
    log.info("languages %s -> %s; generation starts the target with %s (%s)", source, target, target, how)
    return {"source_lang": source, "target_lang": target, "target_language_token": how}


def _check_decoder_start(model: Any) -> None:
    config = model.config
    if getattr(config, "decoder_start_token_id", None) is not None:
        return
    if getattr(model.generation_config, "decoder_start_token_id", None) is not None:
        config.decoder_start_token_id = model.generation_config.decoder_start_token_id
        return
    if getattr(config, "model_type", "") in ("t5", "mt5", "umt5", "longt5") and config.pad_token_id is not None:
        config.decoder_start_token_id = config.pad_token_id  # T5 starts decoding with pad
        model.generation_config.decoder_start_token_id = config.pad_token_id
        return
    raise RuntimeUserError(
        f"the model config ({getattr(config, 'model_type', '?')}) has no decoder_start_token_id; "
        "set it in the model's config.json"
    )


# --------------------------------------------------------------------------- the task


class Seq2SeqTask:
    """translation or summarization: the same data, model and training; other metrics and prefixes."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def headline_metric(self) -> str:
        return "bleu" if self.name == "translation" else "rougeL"

    def columns(self, cfg: RunConfig) -> list[str]:
        return [cfg.spec.data.source_key, cfg.spec.data.target_key]

    def _table(self, path: Any, role: str, cfg: RunConfig) -> Table:
        table = read_table(path, role)
        self._check(table, cfg)
        return table

    def _check(self, table: Table, cfg: RunConfig) -> None:
        d = cfg.spec.data
        require_columns(table, self.columns(cfg))
        texts(table, d.source_key, "source")
        texts(table, d.target_key, "target")

    def load_data(self, cfg: RunConfig) -> Seq2SeqData:
        refuse_streaming(cfg, self.name)
        d = cfg.spec.data
        paths = spec_data_paths(cfg)
        train = self._table(paths["train"], "train", cfg)
        validation = self._table(paths["validation"], "validation", cfg) if "validation" in paths else None
        test = self._table(paths["test"], "test", cfg) if "test" in paths else None
        split = validation is None
        if validation is None:
            train, validation = seeded_split(train, d.validation_split_ratio, cfg.spec.training.seed)
            log.info(
                "no validation file: holding out %d of %d training rows (validation_split_ratio %s, seed %d)",
                len(validation), len(train) + len(validation), d.validation_split_ratio, cfg.spec.training.seed,
            )
        return Seq2SeqData(train, validation, test, split)

    def prepare(self, cfg: RunConfig, data: Seq2SeqData) -> Prepared:
        from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq

        from ftc.runtime.models import ensure_pad_token, load_model, load_tokenizer, max_length

        d = cfg.spec.data
        tokenizer = load_tokenizer(cfg)
        model = load_model(AutoModelForSeq2SeqLM, cfg, ignore_mismatched_sizes=cfg.spec.model.ignore_mismatched_sizes)
        ensure_pad_token(tokenizer, model)
        languages = set_languages(cfg, tokenizer, model)
        _check_decoder_start(model)
        langs = (d.source_lang, d.target_lang) if self.name == "translation" else (None, None)
        prefix = source_prefix(self.name, model.config, *langs)
        if prefix:
            self._store_prefix(model.config, prefix, *langs)
        elif self.name == "translation" and getattr(model.config, "model_type", "") in PREFIX_MODEL_TYPES:
            log.info("T5 without data.source_lang / data.target_lang: sources get no 'translate X to Y: ' prefix")
        length = max_length(cfg, tokenizer, model.config)
        encode = _Encoder(cfg, tokenizer, prefix, length)
        train, validation = encode(data.train), encode(data.validation)
        test = encode(data.test) if data.test is not None else None
        longest = max(encode.longest_target, 1)
        generation = {
            "predict_with_generate": True,
            "generation_max_length": longest + 1,  # + the decoder start token
            "generation_num_beams": int(getattr(model.generation_config, "num_beams", None) or 1),
        }
        log.info(
            "%s: train %d rows, validation %d rows%s; source prefix %r; max_seq_length %d; "
            "generation up to %d tokens, %d beam(s)",
            self.name, len(data.train), len(data.validation), f", test {len(data.test)} rows" if data.test else "",
            prefix, length, longest, generation["generation_num_beams"],
        )
        return Prepared(
            model=model,
            tokenizer=tokenizer,
            train_dataset=train,
            eval_dataset=validation,
            test_dataset=test,
            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
            compute_metrics=Seq2SeqMetrics(tokenizer, self.name, bleu_tokenizer(d.target_lang)),
            peft_task_type="SEQ_2_SEQ_LM",
            headline_metric=self.headline_metric,
            loss_uses_num_items=False,  # T5 / BART / mBART: CrossEntropyLoss mean over the batch's label tokens
            generation=generation,
            info={
                "source_prefix": prefix,
                **languages,
                "max_seq_length": length,
                "generation_max_length": generation["generation_max_length"],
                "generation_num_beams": generation["generation_num_beams"],
            },
        )

    def _store_prefix(self, config: Any, prefix: str, source_lang: str | None, target_lang: str | None) -> None:
        """Save the prefix with the model (config.task_specific_params), as the T5 checkpoints do."""
        key = "summarization" if self.name == "summarization" else f"translation_{source_lang}_to_{target_lang}"
        params = dict(getattr(config, "task_specific_params", None) or {})
        entry = dict(params.get(key) or {})
        entry["prefix"] = prefix
        params[key] = entry
        config.task_specific_params = params


class _Encoder:
    """Tokenizes a table into input_ids, attention_mask and labels (padding -100) through a cached
    `Dataset.map` (see ftc.runtime.data.map_rows); tracks the longest target."""

    def __init__(self, cfg: RunConfig, tokenizer: Any, prefix: str, length: int) -> None:
        d = cfg.spec.data
        self.cfg, self.source_key, self.target_key, self.length = cfg, d.source_key, d.target_key, length
        self.tokenize = _Tokenize(tokenizer, prefix, d.source_key, d.target_key, length, d.pad_to_max_length)
        self.longest_target = 0

    def __call__(self, table: Table) -> Any:
        warn_cut(table, [self.source_key, self.target_key], self.tokenize.bound, self.length)
        dataset = map_rows(table, self.tokenize, self.cfg, "tokenizing")
        for what in ("sources", "targets"):
            if n := sum(dataset[f"long_{what}"]):
                log.warning(
                    "%s data file %s: %d of %d %s are longer than %d tokens (data.max_seq_length) and were truncated",
                    table.role, table.path, n, len(table), what, self.length,
                )
        self.longest_target = max(self.longest_target, *dataset["target_tokens"])
        return dataset.remove_columns(["long_sources", "long_targets", "target_tokens"])


class _Tokenize:
    """The map function: sources (with the prefix) and targets cut to `bound` characters (data.char_bound), then
    tokenized with truncation; whether each was longer than `length` tokens, and each target's token count."""

    def __init__(self, tokenizer: Any, prefix: str, source_key: str, target_key: str, length: int, pad: bool) -> None:
        self.tokenizer, self.prefix, self.source_key, self.target_key = tokenizer, prefix, source_key, target_key
        self.length, self.pad = length, pad
        self.bound = char_bound(tokenizer, length)

    def _encode(self, values: list[str], target: bool) -> tuple[dict[str, list[Any]], list[bool]]:
        """The truncated encoding, and whether each value has more than `length` tokens (its encoding truncated
        at length + 1 is longer than length)."""
        kwargs = {"text_target": values} if target else {"text": values}
        longer = self.tokenizer(**kwargs, truncation=True, max_length=self.length + 1)["input_ids"]
        padding = "max_length" if self.pad else False
        enc = self.tokenizer(**kwargs, truncation=True, max_length=self.length, padding=padding)
        return dict(enc), [len(ids) > self.length for ids in longer]

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        sources = [self.prefix + str(v)[: self.bound] for v in batch[self.source_key]]
        targets = [str(v)[: self.bound] for v in batch[self.target_key]]
        columns, long_sources = self._encode(sources, target=False)
        target_enc, long_targets = self._encode(targets, target=True)
        labels = target_enc["input_ids"]
        if self.pad:
            pad_id = self.tokenizer.pad_token_id
            labels = [[t if t != pad_id else -100 for t in row] for row in labels]
        columns.update(labels=labels, long_sources=long_sources, long_targets=long_targets)
        columns["target_tokens"] = [sum(t != -100 for t in row) for row in labels]
        return columns


TRANSLATION = Seq2SeqTask("translation")
SUMMARIZATION = Seq2SeqTask("summarization")
