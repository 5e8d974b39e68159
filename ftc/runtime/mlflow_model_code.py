"""The MLflow python_function model of ftc's question-answering, sequence-to-sequence and multi-label models.

transformers 5 removed the question-answering, translation, summarization and text2text-generation
pipelines, so MLflow's transformers flavour cannot hold these models; its text-classification
pipeline returns one label per text, or every label's score, not a label set. ftc saves them instead as
an MLflow "model from code": this file is copied into the MLflow model and run when it is loaded
(`mlflow.pyfunc.load_model`); the artifact `hf_model` holds the finetuned transformers model and
its tokenizer (a plain `save_pretrained` folder), and the model config holds the task's settings
(ftc_model_info.json: source prefix, lengths, languages). It needs torch, transformers and pandas,
not ftc. ftc's runtime never imports this module.

predict input and output:
- translation, summarization: texts (a string, a list of strings, a pandas Series, or a DataFrame
  whose column `text`, `source` or first column holds them) -> a list of generated strings.
  params: max_new_tokens, num_beams.
- question_answering: a DataFrame (or a dict, or a list of dicts) with columns `question` and
  `context` -> a DataFrame with `answer`, `score` (start probability x end probability), `start`,
  `end` (character offsets in the context). Long contexts are read in windows of max_seq_length
  tokens overlapping by doc_stride; when the model was trained with unanswerable questions
  (null_answers) an empty answer wins when the [CLS] span scores best in every window (the
  lowest [CLS] score beats the best span: windows without the answer learn to point at [CLS]).
- text_classification (multi-label models only; single-label ones use the transformers flavour):
  texts as for translation, or a DataFrame (or a dict) with columns `text` and `text_pair` for
  sentence pairs -> a DataFrame with `labels` (the labels whose sigmoid is above the threshold,
  best first; possibly none) and `scores` (their sigmoids). params: threshold (default 0.5).
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel

BATCH = 16


def _texts(model_input: Any) -> list[str]:
    import pandas as pd

    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        for name in ("text", "source", "inputs"):
            if name in model_input.columns:
                return [str(v) for v in model_input[name]]
        return [str(v) for v in model_input.iloc[:, 0]]
    if isinstance(model_input, pd.Series):
        return [str(v) for v in model_input]
    if isinstance(model_input, dict):
        return _texts(pd.DataFrame({k: v if isinstance(v, list) else [v] for k, v in model_input.items()}))
    return [str(v) for v in model_input]


def _sentences(model_input: Any) -> tuple[list[str], list[str] | None]:
    """Texts, and their second sentences where the input has a `text_pair` column."""
    import pandas as pd

    frame = model_input
    if isinstance(frame, dict):
        frame = pd.DataFrame({k: v if isinstance(v, list) else [v] for k, v in frame.items()})
    if isinstance(frame, pd.DataFrame) and "text_pair" in frame.columns:
        return _texts(frame.drop(columns="text_pair")), [str(v) for v in frame["text_pair"]]
    return _texts(frame), None


def _pairs(model_input: Any) -> list[tuple[str, str]]:
    import pandas as pd

    frame = model_input
    if isinstance(frame, dict):
        frame = pd.DataFrame([frame] if isinstance(frame.get("question"), str) else frame)
    elif isinstance(frame, list):
        frame = pd.DataFrame(frame)
    missing = [c for c in ("question", "context") if c not in frame.columns]
    if missing:
        raise ValueError(f"question answering needs columns question and context; missing {', '.join(missing)}")
    return [(str(q), str(c)) for q, c in zip(frame["question"], frame["context"])]


# predict takes a DataFrame, a list or a string (see above), so it has no type hints; MLflow warns
# about that once when the model loads ("Add type hints to the `predict` method"): harmless.
class FtcModel(PythonModel):
    def load_context(self, context):  # type: ignore[no-untyped-def]
        from transformers import (
            AutoModelForQuestionAnswering,
            AutoModelForSeq2SeqLM,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        self.config = dict(context.model_config or {})
        self.task = self.config.get("task", "")
        path = context.artifacts["hf_model"]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.config.get("source_lang") and hasattr(self.tokenizer, "src_lang"):
            self.tokenizer.src_lang = self.config["source_lang"]
        auto = {
            "question_answering": AutoModelForQuestionAnswering, "text_classification": AutoModelForSequenceClassification,
        }.get(self.task, AutoModelForSeq2SeqLM)
        self.model = auto.from_pretrained(path).eval()

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if self.task == "question_answering":
            return self._answer(_pairs(model_input))
        if self.task == "text_classification":
            threshold = (params or {}).get("threshold")
            return self._classify(*_sentences(model_input), 0.5 if threshold is None else float(threshold))
        return self._generate(_texts(model_input), params or {})

    # ----------------------------------------------------------------------- multi-label classification

    def _classify(self, texts: list[str], pairs: list[str] | None, threshold: float) -> Any:
        """Each text's labels with a sigmoid above `threshold`, best first, and their sigmoids."""
        import pandas as pd
        import torch

        length = self.config.get("max_seq_length") or None
        names = self.model.config.id2label
        rows: list[dict[str, Any]] = []
        for start in range(0, len(texts), BATCH):
            args = [texts[start : start + BATCH]] + ([pairs[start : start + BATCH]] if pairs is not None else [])
            enc = self.tokenizer(*args, truncation=length is not None, max_length=length, padding=True, return_tensors="pt")
            with torch.no_grad():
                probs = self.model(**enc).logits.sigmoid()
            for row in probs.tolist():
                chosen = sorted(((p, i) for i, p in enumerate(row) if p > threshold), reverse=True)
                rows.append({"labels": [names[i] for _, i in chosen], "scores": [p for p, _ in chosen]})
        return pd.DataFrame(rows, columns=["labels", "scores"])

    # ----------------------------------------------------------------------- seq2seq

    def _generate(self, texts: list[str], params: dict[str, Any]) -> list[str]:
        import torch

        cfg = self.config
        prefix = cfg.get("source_prefix") or ""
        length = cfg.get("max_seq_length") or None
        kwargs = {
            "max_new_tokens": int(params.get("max_new_tokens") or cfg.get("generation_max_length") or 128),
            "num_beams": int(params.get("num_beams") or cfg.get("generation_num_beams") or 1),
        }
        out: list[str] = []
        for start in range(0, len(texts), BATCH):
            batch = [prefix + t for t in texts[start : start + BATCH]]
            enc = self.tokenizer(batch, truncation=length is not None, max_length=length, padding=True, return_tensors="pt")
            with torch.no_grad():
                generated = self.model.generate(**enc, **kwargs)
            out += [t.strip() for t in self.tokenizer.batch_decode(generated, skip_special_tokens=True)]
        return out

    # ----------------------------------------------------------------------- extractive QA

    def _answer(self, pairs: list[tuple[str, str]]) -> Any:
        import pandas as pd

        rows = [self._answer_one(q, c) for q, c in pairs]
        return pd.DataFrame(rows, columns=["answer", "score", "start", "end"])

    def _answer_one(self, question: str, context: str) -> dict[str, Any]:
        import torch

        cfg = self.config
        length = int(cfg.get("max_seq_length") or 384)
        stride = int(cfg.get("doc_stride") or min(128, length // 4))
        longest = int(cfg.get("max_answer_length") or 30)
        pad_right = getattr(self.tokenizer, "padding_side", "right") == "right"
        enc = self.tokenizer(
            question, context, truncation="only_second" if pad_right else "only_first", max_length=length,
            stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True, padding=True,
            return_tensors="pt",
        )
        offsets = enc.pop("offset_mapping")
        enc.pop("overflow_to_sample_mapping", None)
        with torch.no_grad():
            out = self.model(**enc)
        best = {"answer": "", "score": 0.0, "start": 0, "end": 0}
        best_score = float("-inf")
        null_score = float("inf")
        for w in range(offsets.shape[0]):
            ids = enc.sequence_ids(w)
            start_p = out.start_logits[w].softmax(-1)
            end_p = out.end_logits[w].softmax(-1)
            null_score = min(null_score, float(start_p[0] * end_p[0]))
            in_context = [j for j, s in enumerate(ids) if s == 1]
            if not in_context:
                continue
            lo, hi = in_context[0], in_context[-1]
            starts = torch.topk(start_p[lo : hi + 1], min(20, hi - lo + 1)).indices + lo
            ends = torch.topk(end_p[lo : hi + 1], min(20, hi - lo + 1)).indices + lo
            for s in starts.tolist():
                for e in ends.tolist():
                    if e < s or e - s + 1 > longest:
                        continue
                    score = float(start_p[s] * end_p[e])
                    if score > best_score:
                        a, b = int(offsets[w][s][0]), int(offsets[w][e][1])
                        best_score = score
                        best = {"answer": context[a:b], "score": score, "start": a, "end": b}
        if cfg.get("null_answers") and null_score > best_score:
            return {"answer": "", "score": null_score, "start": 0, "end": 0}
        return best


mlflow.models.set_model(FtcModel())
