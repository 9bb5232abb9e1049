"""What a secure round means for the strategy: the layout of the clients' masked vectors, the
threshold, and folding the unmasked sum into the round's running sums in place of individual updates.

The protocol itself is `fedser_shared.secagg`; this module only connects it to a `Strategy`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from fedser_server.core.strategy import Strategy
from fedser_shared.config import PrivacyConfig
from fedser_shared.secagg import DecodedSum, VectorLayout, threshold_for


def update_layout(strategy: Strategy, state: Mapping[str, np.ndarray], privacy: PrivacyConfig,
                  n_clients: int) -> VectorLayout:
    """The masked vector of a round with `n_clients` sampled clients."""
    spec = strategy.expected_update(state)
    return VectorLayout.of({name: t.shape for name, t in spec.items()}, n_clients, privacy.secagg_max_weight,
                           privacy.secagg_clip_norm, privacy.secagg_control_clip_norm)


def round_threshold(privacy: PrivacyConfig, n_clients: int) -> int:
    return threshold_for(n_clients, privacy.secagg_neighbours, privacy.secagg_threshold)


def graph_seed(run_seed: int, round_index: int, attempt: str) -> int:
    """The seed of a round's neighbour graph: fixed by the run's seed, the round and the attempt."""
    digest = hashlib.sha256(struct.pack(">qq", run_seed, round_index) + attempt.encode()).digest()
    return int.from_bytes(digest[:8], "big")


class SumTarget(Protocol):
    """A round's running sums (`engine.sums.WeightedSums`)."""

    def add_sum(self, sums: Mapping[str, np.ndarray], weight_total: int, n_updates: int) -> None: ...


def fold_sum(into: SumTarget, decoded: DecodedSum) -> bool:
    """Fold an unmasked, checked sum into the round's sums; False when no client trained (nothing to fold)."""
    if not decoded.n_trained:
        return False
    into.add_sum(decoded.sums, decoded.weight_total, decoded.n_trained)
    return True
