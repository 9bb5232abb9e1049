"""Per-round values the server sends with each task, and the seeded client sample."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedser_shared.config import RunConfig


def local_lr(config: RunConfig, round_index: int) -> float:
    """eta_l(t) = eta_0 * factor^floor(t / step), t counted from 0."""
    train = config.train
    return train.lr * train.lr_decay_factor ** (round_index // train.lr_decay_every)


def pseudo_label_threshold(config: RunConfig, round_index: int) -> float:
    """tau_t rises linearly from tau_start to tau_end over the first ramp fraction of rounds."""
    semi = config.semi
    ramp_rounds = max(1.0, semi.tau_ramp_fraction * config.federation.rounds)
    progress = min(1.0, round_index / ramp_rounds)
    return semi.tau_start + (semi.tau_end - semi.tau_start) * progress


def is_trainable(config: RunConfig, n_labeled: int, n_unlabeled: int) -> bool:
    """Whether a client can be sampled to train: it has labels, or unlabeled data when semi is on."""
    return n_labeled > 0 or (config.semi.enabled and n_unlabeled > 0)


def sample_size(config: RunConfig, n_alive: int) -> int:
    fed = config.federation
    return min(n_alive, max(fed.min_clients, math.ceil(fed.fraction * n_alive)))


def sample_clients(alive_names: Sequence[str], k: int, seed: int, round_index: int, attempt: int = 0) -> list[str]:
    """A seeded sample, independent of join order: the same names give the same sample."""
    ordered = sorted(alive_names)
    rng = np.random.default_rng([seed, round_index, attempt])
    picked = rng.choice(len(ordered), size=min(k, len(ordered)), replace=False)
    return [ordered[i] for i in sorted(picked)]
