"""Summarization: sequence-to-sequence finetuning scored with ROUGE (see ftc.runtime.tasks.seq2seq)."""

from ftc.runtime.tasks.seq2seq import SUMMARIZATION as TASK

__all__ = ["TASK"]
