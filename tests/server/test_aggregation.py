"""Accepted updates are folded in behind the acknowledgements; a round waits for all of them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from fedser_server.core.strategy import FedAvg, Strategy
from fedser_server.engine.aggregator import Aggregator
from fedser_server.engine.incoming import CheckedUpdate, IncomingUpdate
from fedser_server.engine.sums import WeightedSums
from fedser_shared import codec
from fedser_shared.errors import StateError

W = {"w.a": np.zeros((300, 200), np.float32), "w.b": np.ones(5, np.float32)}


def _checked(tmp_path: Path, strategy: Strategy, value: float, state: dict[str, np.ndarray] = W) -> CheckedUpdate:
    update = {name: np.full(spec.shape, value, spec.dtype) for name, spec in strategy.expected_update(state).items()}
    data = codec.encode(update)
    with IncomingUpdate(len(data), strategy.expected_update(state), tmp_path) as incoming:
        for chunk in codec.iter_chunks(data, 65536):
            incoming.feed(chunk)
        return incoming.finish(hashlib.sha256(data).digest())


def test_drain_returns_once_every_added_update_is_in_the_sums(tmp_path: Path) -> None:
    strategy = FedAvg()
    sums = WeightedSums(strategy, W, 3)
    aggregator = Aggregator(max_pending=1)
    try:
        for value, n_samples in ((1.0, 1), (2.0, 2), (4.0, 1)):
            aggregator.wait_for_room()
            aggregator.add(_checked(tmp_path, strategy, value), sums, n_samples)
        aggregator.drain()
        assert sums.n_updates == 3
        state = sums.new_state()
    finally:
        aggregator.close()
    np.testing.assert_allclose(state["w.a"], (1.0 + 4.0 + 4.0) / 4)
    np.testing.assert_allclose(state["w.b"], 1 + (1.0 + 4.0 + 4.0) / 4)


class _Unreadable(CheckedUpdate):
    def __init__(self) -> None:
        self.discarded = False

    def runs(self, block_bytes: int = 0):
        raise OSError("disk gone")
        yield

    def discard(self) -> None:
        self.discarded = True


def test_an_update_that_cannot_be_folded_in_stops_the_round(tmp_path: Path) -> None:
    sums = WeightedSums(FedAvg(), W, 1)
    aggregator = Aggregator()
    broken = _Unreadable()
    try:
        aggregator.add(broken, sums, 1)
        with pytest.raises(StateError, match="disk gone"):
            aggregator.drain()
    finally:
        aggregator.close()
    assert broken.discarded and sums.n_updates == 0
