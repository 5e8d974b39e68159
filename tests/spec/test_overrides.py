"""`--set` overrides: typed by the schema, unknown keys refused with a suggestion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ftc.compiler.build import load_resolved
from ftc.errors import SpecError

from tests.spec.test_validate import HEAD


def test_set_by_dotted_key_and_by_leaf(write_spec: Callable[..., Path]) -> None:
    r = load_resolved(write_spec(HEAD), ["training.num_train_epochs=3", "learning_rate=1e-4", "lora.apply_lora=true"])
    assert r.spec.training.num_train_epochs == 3
    assert r.spec.optimizer.learning_rate == 1e-4
    assert r.spec.lora.apply_lora is True
    assert r.sources["optimizer.learning_rate"] == "--set learning_rate=1e-4"


def test_set_replaces_a_value_given_by_alias(write_spec: Callable[..., Path]) -> None:
    r = load_resolved(write_spec(HEAD + "optimizer:\n  lr: 0.1\n"), ["optimizer.learning_rate=0.2"])
    assert r.spec.optimizer.learning_rate == 0.2


def test_set_into_a_scalar_shorthand_and_free_mapping(write_spec: Callable[..., Path]) -> None:
    r = load_resolved(write_spec(HEAD), ["model.tokenizer_name=tok", "env.vars.OMP_NUM_THREADS=2"])
    assert r.spec.model.model_selector_output == "./m"
    assert r.spec.model.tokenizer_name == "tok"
    assert r.spec.env.vars == {"OMP_NUM_THREADS": "2"}


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("training.num_train_epoch=3", "training.num_train_epoch: unknown key; did you mean num_train_epochs?"),
        ("trainig.num_train_epochs=3", "trainig: unknown key; did you mean training?"),
        ("no_equals_sign", "expected KEY=VALUE"),
        ("training.num_train_epochs=three", "--set training.num_train_epochs=three: training.num_train_epochs: Input should be a valid integer"),
    ],
)
def test_bad_overrides(write_spec: Callable[..., Path], override: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        load_resolved(write_spec(HEAD), [override])
    assert words in str(info.value)
