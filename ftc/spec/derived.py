"""Values derived from a resolved spec, computed by one function for the compiler and the runtime.

The compiler writes them into `ftc.resolved.json` (`derived`); the runtime derives them again, with the same
function, after its command line changed parameters. Some depend on which parameters the user gave, which
the runtime cannot see in a resolved config: those the flags record (`Derived.defaults`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ftc.spec.model import SpecBase
from ftc.spec.sections import LLM_TASKS, LOWER_IS_BETTER, TrainingSection

OPTIM = "optimizer.optim"
EVAL_BATCH = "training.per_device_eval_batch_size"
EPOCHS = "training.num_train_epochs"
MIN_UPDATE_STEPS = "training.min_update_steps"


@dataclass(frozen=True)
class Derived(Mapping[str, Any]):
    """The derived values; read as a mapping too (`derived["name"]`), without the Nones of other tasks."""

    name: str  # the spec's name, or <task>_finetune
    world_size: int  # nodes x processes_per_node
    effective_train_batch_size: int  # per device x world size x gradient accumulation
    epochs_from_min_update_steps: bool  # min_update_steps is set and num_train_epochs is a default
    metric_greater_is_better: bool
    optim_fused_on_cuda: bool | None = None  # causal_lm: the optimizer is a default (fused AdamW on CUDA)
    eval_batch_from_train: bool | None = None  # causal_lm: the evaluation batch is a default (= training batch)

    def __getitem__(self, key: str) -> Any:
        if key not in self._present():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._present())

    def __len__(self) -> int:
        return len(self._present())

    def _present(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> Derived:
        """The `derived` section of a resolved config; TypeError when it is not one of this format."""
        return cls(**values)

    def defaults(self) -> set[str]:
        """The parameters these flags record as defaults (not given in the spec)."""
        flags = {OPTIM: self.optim_fused_on_cuda, EVAL_BATCH: self.eval_batch_from_train}
        found = {key for key, flag in flags.items() if flag}
        return found | ({EPOCHS} if self.epochs_from_min_update_steps else set())


def derive(spec: SpecBase, defaults: Collection[str]) -> Derived:
    """The values derived from `spec`; `defaults` are the dotted keys whose values were not given."""
    res, tr = spec.resources, spec.training
    world_size = res.nodes * res.processes_per_node
    llm = spec.task in LLM_TASKS
    return Derived(
        name=spec.name or f"{spec.task}_finetune",
        world_size=world_size,
        effective_train_batch_size=tr.per_device_train_batch_size * world_size * tr.gradient_accumulation_steps,
        epochs_from_min_update_steps=tr.min_update_steps is not None and EPOCHS in defaults,
        metric_greater_is_better=spec.evaluation.metric_for_best_model not in LOWER_IS_BETTER,
        optim_fused_on_cuda=OPTIM in defaults if llm else None,
        eval_batch_from_train=EVAL_BATCH in defaults if llm else None,
    )


def follow_derived(spec: SpecBase, derived: Derived) -> None:
    """Set the parameters that follow others: no evaluation without run_validation; causal_lm's evaluation
    batch is the training batch unless given."""
    if not spec.evaluation.run_validation:
        spec.evaluation.evaluation_strategy = "no"
    if derived.eval_batch_from_train:
        spec.training.per_device_eval_batch_size = spec.training.per_device_train_batch_size


def steps_per_epoch(training: TrainingSection, n_train: int, world_size: int) -> int:
    """Optimizer updates per epoch, as the Trainer counts them, for `n_train` rows over `world_size` processes."""
    batches = math.ceil(n_train / (training.per_device_train_batch_size * max(1, world_size)))
    return max(1, math.ceil(batches / training.gradient_accumulation_steps))


def num_epochs(training: TrainingSection, derived: Derived, per_epoch: int) -> int:
    """num_train_epochs, or enough epochs for min_update_steps (Anyscale) when it stands in for them."""
    if derived.epochs_from_min_update_steps and training.min_update_steps:
        return max(1, math.ceil(training.min_update_steps / max(1, per_epoch)))
    return training.num_train_epochs
