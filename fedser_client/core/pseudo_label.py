"""Multiview pseudo-labeling (MvPL), DESIGN §5.

For each unlabeled x: m weak views, p_v = softmax(f(x'_v) / T), p_bar = mean_v p_v,
k = argmax p_bar, u = std_v p_v[k] (population std over the views).
Select when p_bar[k] >= tau and u <= kappa; keep at most `max_per_class` per class,
lowest uncertainty first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PseudoLabelSelection:
    index: np.ndarray        # positions in the candidate array
    label: np.ndarray        # chosen class per selected position
    confidence: np.ndarray
    uncertainty: np.ndarray
    n_confident: int = 0     # candidates with p_bar[k] >= tau
    n_eligible: int = 0      # of those, candidates with u <= kappa too (before the per-class cap)


def view_probabilities(logits_per_view: torch.Tensor, temperature: float) -> torch.Tensor:
    """[views, n, C] logits -> [views, n, C] tempered softmax probabilities."""
    return torch.softmax(logits_per_view / temperature, dim=-1)


def select_pseudo_labels(
    probs_per_view: np.ndarray, threshold: float, uncertainty_max: float, max_per_class: int
) -> PseudoLabelSelection:
    probs = np.asarray(probs_per_view, dtype=np.float64)
    mean = probs.mean(axis=0)                       # [n, C]
    label = mean.argmax(axis=1)                     # [n]
    rows = np.arange(mean.shape[0])
    confidence = mean[rows, label]
    uncertainty = probs[:, rows, label].std(axis=0)  # population std across views
    confident = confidence >= threshold
    eligible = np.flatnonzero(confident & (uncertainty <= uncertainty_max))
    chosen: list[int] = []
    for cls in np.unique(label[eligible]):
        members = eligible[label[eligible] == cls]
        order = np.lexsort((members, uncertainty[members]))  # lowest u first, ties by position
        chosen.extend(members[order][:max_per_class].tolist())
    picked = np.array(sorted(chosen), dtype=np.int64)
    return PseudoLabelSelection(picked, label[picked], confidence[picked], uncertainty[picked],
                                int(confident.sum()), int(eligible.size))
