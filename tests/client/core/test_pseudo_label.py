"""Multiview pseudo-labeling on hand-built probabilities and logits (DESIGN §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedser_client.core.pseudo_label import select_pseudo_labels, view_probabilities

C = 4


def constant_views(rows: list[list[float]], views: int = 10) -> np.ndarray:
    """[views, n, C]: every view gives the same probabilities (uncertainty 0)."""
    return np.repeat(np.array(rows, np.float64)[None], views, axis=0)


def test_confidence_threshold_on_the_mean_over_views() -> None:
    probs = constant_views([[0.91, 0.03, 0.03, 0.03], [0.03, 0.89, 0.04, 0.04], [0.05, 0.05, 0.90, 0.0]])
    picked = select_pseudo_labels(probs, threshold=0.9, uncertainty_max=0.005, max_per_class=1)
    assert picked.index.tolist() == [0, 2]  # 0.89 < 0.9 is refused; 0.90 >= 0.9 is taken
    assert picked.label.tolist() == [0, 2]
    lower = select_pseudo_labels(probs, threshold=0.85, uncertainty_max=0.005, max_per_class=1)
    assert lower.index.tolist() == [0, 1, 2]


def test_uncertainty_is_the_population_std_of_the_chosen_class_across_views() -> None:
    views = constant_views([[0.95, 0.05, 0.0, 0.0], [0.0, 0.95, 0.05, 0.0]])
    # sample 0: chosen-class probability alternates 0.945 / 0.955 over the views -> std 0.005 exactly (kept)
    # sample 1: alternates 0.935 / 0.965 -> std 0.015 (refused) although its mean is 0.95
    views[0::2, 0, :2] = [0.945, 0.055]
    views[1::2, 0, :2] = [0.955, 0.045]
    views[0::2, 1, 1:3] = [0.935, 0.065]
    views[1::2, 1, 1:3] = [0.965, 0.035]
    picked = select_pseudo_labels(views, threshold=0.9, uncertainty_max=0.005 + 1e-12, max_per_class=1)
    assert picked.index.tolist() == [0]
    assert picked.uncertainty[0] == pytest.approx(0.005)
    assert picked.confidence[0] == pytest.approx(0.95)


def test_mean_over_views_decides_the_class() -> None:
    views = np.zeros((2, 1, C))
    views[0, 0] = [0.6, 0.4, 0, 0]
    views[1, 0] = [0.3, 0.7, 0, 0]  # mean [0.45, 0.55]: class 1, although view 0 votes class 0
    picked = select_pseudo_labels(views, threshold=0.5, uncertainty_max=1.0, max_per_class=1)
    assert picked.label.tolist() == [1] and picked.confidence[0] == pytest.approx(0.55)


def test_at_most_one_per_class_lowest_uncertainty_first() -> None:
    rows = [[0.97, 0.01, 0.01, 0.01]] * 3 + [[0.01, 0.97, 0.01, 0.01]] * 2
    views = constant_views(rows, views=4)
    wobble = {0: 0.004, 1: 0.001, 2: 0.003, 3: 0.002, 4: 0.0}  # per-sample half-swing of the chosen class
    for sample, w in wobble.items():
        k = 0 if sample < 3 else 1
        views[0::2, sample, k] += w
        views[1::2, sample, k] -= w
    picked = select_pseudo_labels(views, threshold=0.9, uncertainty_max=0.005, max_per_class=1)
    assert picked.index.tolist() == [1, 4]  # class 0: sample 1 (u=0.001); class 1: sample 4 (u=0)
    two = select_pseudo_labels(views, threshold=0.9, uncertainty_max=0.005, max_per_class=2)
    assert two.index.tolist() == [1, 2, 3, 4]
    assert select_pseudo_labels(views, threshold=0.9, uncertainty_max=0.005, max_per_class=0).index.size == 0


def test_temperature_softens_the_probabilities() -> None:
    logits = torch.tensor([[[4.0, 0.0, 0.0, 0.0]]]).repeat(10, 1, 1)  # [views, n, C]
    hot = view_probabilities(logits, temperature=1.0).numpy()
    soft = view_probabilities(logits, temperature=2.0).numpy()
    assert soft[0, 0, 0] == pytest.approx(np.exp(2) / (np.exp(2) + 3))  # softmax(logits / 2)
    assert hot[0, 0, 0] == pytest.approx(np.exp(4) / (np.exp(4) + 3))
    # 0.711 at T=2 fails a 0.9 threshold that 0.948 at T=1 passes
    assert select_pseudo_labels(hot, 0.9, 0.005, 1).index.tolist() == [0]
    assert select_pseudo_labels(soft, 0.9, 0.005, 1).index.size == 0


def test_nothing_eligible_selects_nothing() -> None:
    picked = select_pseudo_labels(constant_views([[0.25] * 4] * 3), threshold=0.5, uncertainty_max=0.005, max_per_class=1)
    assert picked.index.size == 0 and picked.label.size == 0
