"""A label rate is the share of a client's rows that keep their label, exactly, with no per-class floor."""

from __future__ import annotations

import numpy as np
import pytest

from fedser_client.core.data import UNLABELED
from fedser_sim.labels import hide_labels, labeled_count, labeled_speakers


@pytest.mark.parametrize("rate", [0.05, 0.1, 0.2, 0.4])
def test_the_nominal_rate_is_the_share_that_keeps_its_label(rate: float) -> None:
    labels = np.repeat(np.arange(3), [20, 23, 14])  # 57 rows, 3 classes of unequal size
    kept = hide_labels(labels, rate, np.random.default_rng(0))
    assert (kept != UNLABELED).sum() == labeled_count(57, rate) == round(rate * 57)
    shown = kept != UNLABELED
    assert np.array_equal(kept[shown], labels[shown])  # kept labels are the true ones
    per_class = np.bincount(kept[shown], minlength=3)
    assert np.all(np.abs(per_class - rate * np.array([20, 23, 14])) < 1)  # spread in proportion


def test_a_small_client_is_not_lifted_above_its_rate() -> None:
    labels = np.repeat(np.arange(4), 5)  # 20 rows: 5% is one label, not one per class
    assert (hide_labels(labels, 0.05, np.random.default_rng(1)) != UNLABELED).sum() == 1


def test_the_choice_is_seeded() -> None:
    labels = np.arange(100) % 4
    one = hide_labels(labels, 0.1, np.random.default_rng(7))
    assert np.array_equal(one, hide_labels(labels, 0.1, np.random.default_rng(7)))
    assert not np.array_equal(one, hide_labels(labels, 0.1, np.random.default_rng(8)))
    assert np.array_equal(hide_labels(labels, 1.0, np.random.default_rng(7)), labels)


def test_labeled_speakers_are_k_distinct_training_speakers() -> None:
    speakers = ["a", "b", "c", "d", "e"]
    chosen = labeled_speakers(speakers, 2, np.random.default_rng(0))
    assert len(chosen) == 2 and chosen <= set(speakers)
    with pytest.raises(ValueError, match="3 of 2"):
        labeled_speakers(["a", "b"], 3, np.random.default_rng(0))
