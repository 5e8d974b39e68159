"""Classification metrics against hand-computed values and an independent MCC formula."""

from __future__ import annotations

import numpy as np
import pytest

from ftc.runtime.metrics import classification_metrics, confusion_matrix


def test_hand_computed_three_classes() -> None:
    refs = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(refs, preds)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["mcc"] == pytest.approx(_mcc_by_correlation(refs, preds, 3))


def test_binary_mcc_matches_the_textbook_formula() -> None:
    refs = np.array([1, 1, 1, 0, 0, 0, 0, 1, 0, 1])
    preds = np.array([1, 0, 1, 0, 1, 0, 0, 1, 0, 1])
    tp, tn, fp, fn = 4, 4, 1, 1
    expected = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert classification_metrics(refs, preds)["mcc"] == pytest.approx(expected)


def test_perfect_and_constant_predictions() -> None:
    refs = np.array([0, 1, 2, 1])
    assert classification_metrics(refs, refs) == pytest.approx(
        {"accuracy": 1.0, "f1_macro": 1.0, "mcc": 1.0, "precision_macro": 1.0, "recall_macro": 1.0}
    )
    constant = classification_metrics(refs, np.zeros(4, dtype=int))
    assert constant["mcc"] == 0.0  # no variance in the predictions
    assert constant["accuracy"] == pytest.approx(0.25)
    assert constant["recall_macro"] == pytest.approx(1 / 3)  # class 0 fully found, 1 and 2 not
    assert constant["precision_macro"] == pytest.approx(0.25 / 3)


def test_random_against_reference() -> None:
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 5, 500)
    preds = np.where(rng.random(500) < 0.6, refs, rng.integers(0, 5, 500))
    m = classification_metrics(refs, preds)
    assert m["accuracy"] == pytest.approx(float((refs == preds).mean()))
    assert m["mcc"] == pytest.approx(_mcc_by_correlation(refs, preds, 5))
    cm = confusion_matrix(refs, preds)
    assert cm.sum() == 500 and np.trace(cm) == (refs == preds).sum()


def _mcc_by_correlation(refs: np.ndarray, preds: np.ndarray, k: int) -> float:
    """Gorodkin's R_K as the correlation of the one-hot label matrices (an independent formula)."""
    x = np.eye(k)[refs]
    y = np.eye(k)[preds]
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    return float((xc * yc).sum() / np.sqrt((xc * xc).sum() * (yc * yc).sum()))
