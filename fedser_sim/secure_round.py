"""A secure round in one process: each client quantises its update, the SecAgg+ state machines
run over an in-memory transport, and the round's sums take the unmasked sum. The in-process engine
and benchmarks/privacy.py use it, so sweeps exercise the same protocol code as the gRPC engine."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from fedser_client.core.trainer import stable_seed
from fedser_server.core.secure_aggregation import fold_sum, graph_seed, round_threshold, update_layout
from fedser_server.core.strategy import Strategy
from fedser_server.engine.sums import WeightedSums
from fedser_shared.config import PrivacyConfig
from fedser_shared.secagg import SecureRound, decode, encode, secure_sum
from fedser_shared.secagg.crypto import RandomBytes
from fedser_shared.secagg.quantise import Transform


@dataclass(frozen=True)
class Contribution:
    update: Mapping[str, np.ndarray]
    n_samples: int


def aggregate_securely(strategy: Strategy, sums: WeightedSums, state: Mapping[str, np.ndarray],
                       contributions: Mapping[str, Contribution],
                       privacy: PrivacyConfig, run_seed: int, round_index: int,
                       transform_for: Callable[[str], Transform | None] | None = None,
                       drop_before: Mapping[str, str] | None = None,
                       random_bytes: RandomBytes = os.urandom) -> SecureRound:
    """Sum the contributions with SecAgg+ and fold the sum into the round's `sums`.

    `transform_for(client)`: a hook on the client's clipped values before rounding (its share of
    differential-privacy noise). Raises BelowThresholdError (nothing folded) when too many drop.
    """
    names = sorted(contributions)
    layout = update_layout(strategy, state, privacy, len(names))
    quantised = {}
    for name in names:
        rng = np.random.default_rng(stable_seed(name, run_seed, round_index))  # stochastic rounding
        transform = transform_for(name) if transform_for else None
        quantised[name] = encode(contributions[name].update, contributions[name].n_samples, layout, rng, transform)
    threshold = round_threshold(privacy, len(names))
    context = f"fedser-sim round {round_index}".encode()
    result = secure_sum(quantised, threshold, privacy.secagg_neighbours, graph_seed(run_seed, round_index, ""),
                        context, drop_before, random_bytes)
    fold_sum(sums, decode(result.result.total, layout, len(result.result.survivors), check_norm=transform_for is None))
    return result
