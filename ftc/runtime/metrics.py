"""Classification metrics in plain numpy (no scikit-learn or `evaluate` downloads).

Both kinds of classification report accuracy, f1_macro, mcc, precision_macro and recall_macro,
so any of them can be evaluation.metric_for_best_model.

Single-label (`classification_metrics`): macro averages run over the classes present in the
references or the predictions, as scikit-learn's do; a class with no predictions has precision 0
(scikit-learn's zero_division=0); mcc is the multi-class MCC (Gorodkin's R_K).

Multi-label (`multi_label_metrics`, multi-hot arrays of shape examples x labels):
- accuracy: exact-match (subset) accuracy, the share of examples whose predicted label set is
  exactly the reference set (two empty sets match);
- precision_macro, recall_macro, f1_macro: each label scored as its own yes/no decision, then
  averaged over the labels present in the references or the predictions, as in single-label
  (scikit-learn's multi-label macro averages over every label column, counting a label that
  never occurs and is never predicted as 0); zero_division=0 as above;
- mcc: the binary MCC of all (example, label) decisions flattened into one list.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(references: np.ndarray, predictions: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """C[i, j] = number of samples of class i predicted as j."""
    references = np.asarray(references, dtype=np.int64).ravel()
    predictions = np.asarray(predictions, dtype=np.int64).ravel()
    if references.shape != predictions.shape:
        raise ValueError(f"{references.shape[0]} references but {predictions.shape[0]} predictions")
    k = int(max(num_classes or 0, references.max(initial=-1) + 1, predictions.max(initial=-1) + 1))
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (references, predictions), 1)
    return cm


def matthews_corrcoef(cm: np.ndarray) -> float:
    """Multi-class Matthews correlation coefficient (Gorodkin's R_K) from a confusion matrix."""
    cm = cm.astype(np.float64)
    t = cm.sum(axis=1)  # true counts per class
    p = cm.sum(axis=0)  # predicted counts per class
    c = np.trace(cm)
    s = cm.sum()
    cov_ytyp = c * s - np.dot(t, p)
    cov_ypyp = s * s - np.dot(p, p)
    cov_ytyt = s * s - np.dot(t, t)
    denom = np.sqrt(cov_ytyt * cov_ypyp)
    return float(cov_ytyp / denom) if denom > 0 else 0.0


def _macro_scores(tp: np.ndarray, true_count: np.ndarray, pred_count: np.ndarray) -> dict[str, float]:
    """f1_macro, precision_macro and recall_macro from per-class counts, over the classes present."""
    tp, true_count, pred_count = (np.asarray(a, dtype=np.float64) for a in (tp, true_count, pred_count))
    present = (true_count > 0) | (pred_count > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_count > 0, tp / pred_count, 0.0)
        recall = np.where(true_count > 0, tp / true_count, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)

    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    return {"f1_macro": macro(f1), "precision_macro": macro(precision), "recall_macro": macro(recall)}


def _by_name(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics in name order (accuracy, f1_macro, mcc, ...), as they are logged."""
    return dict(sorted(metrics.items()))


def classification_metrics(references: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """accuracy, f1_macro, mcc, precision_macro and recall_macro of class-id arrays."""
    cm = confusion_matrix(references, predictions)
    total = cm.sum()
    tp = np.diag(cm)
    return _by_name({
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "mcc": matthews_corrcoef(cm),
        **_macro_scores(tp, cm.sum(axis=1), cm.sum(axis=0)),
    })


def multi_label_metrics(references: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """accuracy (exact match), f1_macro, mcc, precision_macro and recall_macro of multi-hot arrays."""
    references = np.asarray(references).astype(bool)
    predictions = np.asarray(predictions).astype(bool)
    if references.ndim != 2 or references.shape != predictions.shape:
        raise ValueError(f"references {references.shape} and predictions {predictions.shape} must be the same 2-d shape")
    flat = confusion_matrix(references.ravel(), predictions.ravel(), num_classes=2)
    return _by_name({
        "accuracy": float((references == predictions).all(axis=1).mean()) if len(references) else 0.0,
        "mcc": matthews_corrcoef(flat),
        **_macro_scores((references & predictions).sum(axis=0), references.sum(axis=0), predictions.sum(axis=0)),
    })
