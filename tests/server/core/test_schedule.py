"""What the server sends with each task: eta_l(t) and tau_t (DESIGN §5)."""

from __future__ import annotations

import pytest

from fedser_server.core.schedule import local_lr, pseudo_label_threshold, sample_clients, sample_size
from fedser_shared.config import load_run_config


def test_learning_rate_halves_every_100_rounds_by_default() -> None:
    config = load_run_config(None, {"train.lr": 0.08})
    # t counts rounds from 0: rounds 1..100 use eta_0, 101..200 eta_0/2, ...
    assert [local_lr(config, t) for t in (0, 99, 100, 199, 200, 450)] == pytest.approx([0.08, 0.08, 0.04, 0.04, 0.02, 0.005])


def test_learning_rate_schedule_is_configurable() -> None:
    config = load_run_config(None, {"train.lr": 1.0, "train.lr_decay_every": 10, "train.lr_decay_factor": 0.1})
    assert [local_lr(config, t) for t in (9, 10, 25)] == pytest.approx([1.0, 0.1, 0.01])


def test_threshold_ramps_linearly_over_the_first_60_percent_then_stays() -> None:
    config = load_run_config(None, {"federation.rounds": 500})
    assert pseudo_label_threshold(config, 0) == pytest.approx(0.5)
    assert pseudo_label_threshold(config, 150) == pytest.approx(0.7)
    assert pseudo_label_threshold(config, 300) == pytest.approx(0.9)
    assert pseudo_label_threshold(config, 499) == pytest.approx(0.9)


def test_sample_is_seeded_sized_by_fraction_and_independent_of_order() -> None:
    config = load_run_config(None, {"federation.fraction": 0.2, "federation.min_clients": 2})
    names = [f"c{i:02d}" for i in range(24)]
    assert sample_size(config, 24) == 5 and sample_size(config, 3) == 2 and sample_size(config, 1) == 1
    first = sample_clients(names, 5, seed=7, round_index=3)
    assert first == sample_clients(list(reversed(names)), 5, seed=7, round_index=3)
    assert len(set(first)) == 5
    assert any(sample_clients(names, 5, seed=7, round_index=r) != first for r in range(4, 10))
