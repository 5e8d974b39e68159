"""Tasks plug into the shared trainer here: each module defines `TASK`, an object with the `Task` shape.

A task reads and checks its data (`load_data`, before any model is loaded, so bad data fails
fast), then builds the model, tokenizer, datasets, collator and metrics (`prepare`). Everything
else (TrainingArguments, LoRA, evaluation before and after, saving, metrics.json) is shared.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ftc.runtime.config import RunConfig
from ftc.runtime.errors import RuntimeUserError

# task name -> module defining TASK. A task of the spec missing here is not implemented yet.
TASK_MODULES: dict[str, str] = {
    "text_classification": "ftc.runtime.tasks.text_classification",
    "translation": "ftc.runtime.tasks.translation",
    "summarization": "ftc.runtime.tasks.summarization",
    "question_answering": "ftc.runtime.tasks.question_answering",
    "causal_lm": "ftc.runtime.tasks.causal_lm",
}


@dataclass
class Prepared:
    """What a task hands to the shared trainer."""

    model: Any
    tokenizer: Any
    train_dataset: Any
    eval_dataset: Any
    data_collator: Any = None
    compute_metrics: Callable[[Any], dict[str, float]] | None = None
    # compute_metrics of the test data where metrics need the data they score (question answering maps
    # the chunks' logits back to the examples); None: compute_metrics scores the test data too.
    test_compute_metrics: Callable[[Any], dict[str, float]] | None = None
    test_dataset: Any = None
    peft_task_type: str = "SEQ_CLS"  # peft TaskType of this task
    headline_metric: str = "accuracy"  # printed before / after training
    # Whether the model's loss divides by the Trainer's num_items_in_batch (causal LM losses do). A loss
    # that is a plain batch mean (sequence classification) must say False, or the Trainer skips the
    # division by gradient_accumulation_steps and multiplies by the number of processes.
    loss_uses_num_items: bool = True
    # Seq2SeqTrainingArguments settings (predict_with_generate, generation_max_length, generation_num_beams):
    # when set, the trainer uses Seq2SeqTrainer and evaluates by generating.
    generation: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # task facts for the log (labels, sizes)


class Task(Protocol):
    name: str

    def load_data(self, cfg: RunConfig) -> Any:
        """Read and check the data; raise DataError (naming the file) for anything unusable."""

    def prepare(self, cfg: RunConfig, data: Any) -> Prepared:
        """Load tokenizer and model, tokenize, and return what training needs."""


def get_task(name: str) -> Task:
    """The task called `name`; a clear error for tasks the runtime does not implement."""
    module = TASK_MODULES.get(name)
    if module is None:
        known = ", ".join(sorted(TASK_MODULES))
        raise RuntimeUserError(f"the runtime does not support task {name!r} yet (supported: {known})")
    return importlib.import_module(module).TASK  # type: ignore[no-any-return]
