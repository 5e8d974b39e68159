"""Translation: sequence-to-sequence finetuning scored with BLEU (see ftc.runtime.tasks.seq2seq)."""

from ftc.runtime.tasks.seq2seq import TRANSLATION as TASK

__all__ = ["TASK"]
