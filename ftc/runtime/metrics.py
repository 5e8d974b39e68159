"""Classification metrics in plain numpy (no scikit-learn or `evaluate` downloads).

Macro averages run over the classes present in the references or the predictions, as
scikit-learn's do; a class with no predictions has precision 0 (scikit-learn's zero_division=0).
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


def classification_metrics(references: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """accuracy, f1_macro, mcc, precision_macro and recall_macro of class-id arrays."""
    cm = confusion_matrix(references, predictions)
    total = cm.sum()
    tp = np.diag(cm).astype(np.float64)
    true_count = cm.sum(axis=1).astype(np.float64)
    pred_count = cm.sum(axis=0).astype(np.float64)
    present = (true_count > 0) | (pred_count > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_count > 0, tp / pred_count, 0.0)
        recall = np.where(true_count > 0, tp / true_count, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "f1_macro": macro(f1),
        "mcc": matthews_corrcoef(cm),
        "precision_macro": macro(precision),
        "recall_macro": macro(recall),
    }
