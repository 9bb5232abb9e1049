"""Class-balanced cross-entropy (Cui et al. 2019), DESIGN §5."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def class_balanced_weights(label_counts: np.ndarray, beta: float) -> np.ndarray:
    """w_c = (1 - beta) / (1 - beta^n_c), normalised to sum to C.

    A class with no labels takes the smallest present count, so it is not weighted infinitely."""
    counts = np.asarray(label_counts, dtype=np.float64)
    present = counts[counts > 0]
    if present.size == 0:
        return np.ones_like(counts)
    counts = np.where(counts > 0, counts, present.min())
    if beta == 0.0:
        weights = np.ones_like(counts)
    else:
        weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    normalised: np.ndarray = weights * len(counts) / weights.sum()
    return normalised


def class_balanced_ce(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, targets, weight=class_weights)
