"""Confusion matrices, per-class recall and UAR (unweighted average recall)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def per_class_recall(matrix: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for a class with no true examples."""
    matrix = np.asarray(matrix, dtype=np.float64)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(matrix) / support, np.nan)


def uar(matrix: np.ndarray) -> float:
    """Mean recall over the classes that have true examples; NaN when there are none."""
    recalls = per_class_recall(matrix)
    present = recalls[~np.isnan(recalls)]
    return float(present.mean()) if present.size else float("nan")
