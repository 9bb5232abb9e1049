"""Class-balanced weights by effective number (Cui et al. 2019)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedser_client.core.losses import class_balanced_ce, class_balanced_weights


def test_weights_follow_the_effective_number_and_sum_to_c() -> None:
    beta = 0.9999
    counts = np.array([10, 20, 40, 80])
    raw = (1 - beta) / (1 - beta ** counts)
    weights = class_balanced_weights(counts, beta)
    np.testing.assert_allclose(weights, raw * 4 / raw.sum())
    assert weights.sum() == pytest.approx(4.0)
    assert weights[0] > weights[1] > weights[2] > weights[3]


def test_a_class_without_labels_takes_the_smallest_present_count() -> None:
    weights = class_balanced_weights(np.array([0, 5, 9, 30]), 0.9999)
    np.testing.assert_allclose(weights, class_balanced_weights(np.array([5, 5, 9, 30]), 0.9999))
    assert np.isfinite(weights).all()
    np.testing.assert_array_equal(class_balanced_weights(np.zeros(4), 0.9999), np.ones(4))


def test_weighted_cross_entropy_matches_a_hand_computation() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([0, 1, 1])
    w = torch.tensor([0.5, 1.5])
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(3), targets]
    expected = (w[targets] * nll).sum() / w[targets].sum()
    assert float(class_balanced_ce(logits, targets, w)) == pytest.approx(float(expected))
