"""The relative norm bound: k times the median norm of recent accepted updates, the tighter of
it and the absolute bound; refuse or clip."""

from __future__ import annotations

import pytest

from fedser_server.core.norm_bound import MIN_PEERS, NormBound
from fedser_shared.errors import NormBoundError


def test_before_enough_peers_the_bound_is_k_times_the_model_norm() -> None:
    bound = NormBound(absolute=None, relative=10.0)
    assert bound.scale(49.0, model_norm=5.0) == 1.0
    with pytest.raises(NormBoundError, match="global model's norm"):
        bound.scale(51.0, model_norm=5.0)


def test_with_peers_the_bound_is_k_times_their_median_and_zero_updates_do_not_count() -> None:
    bound = NormBound(absolute=None, relative=10.0)
    for norm in (1.0, 2.0, 0.0, 3.0):
        bound.accepted(norm, 1.0)
    assert MIN_PEERS == 3
    assert bound.scale(20.0, model_norm=1e9) == 1.0  # median 2 -> bound 20
    with pytest.raises(NormBoundError, match="median of recent updates"):
        bound.scale(20.5, model_norm=1e9)


def test_clipping_scales_down_to_the_tighter_bound_and_remembers_the_clipped_norm() -> None:
    bound = NormBound(absolute=15.0, relative=10.0, action="clip")
    for _ in range(3):
        bound.accepted(2.0, 1.0)
    assert bound.scale(30.0, model_norm=1.0) == pytest.approx(0.5)  # absolute 15 < relative 20
    bound.accepted(1e6, 1e-5)  # folded in as 10
    assert bound.bound(1.0)[0] == 15.0


def test_no_bound_configured_takes_every_update() -> None:
    assert NormBound(absolute=None, relative=None).scale(1e30, model_norm=1.0) == 1.0


def test_the_norm_is_taken_over_the_named_tensors_together() -> None:
    import numpy as np

    from fedser_server.core.norm_bound import l2_norm

    tensors = {"delta.a": np.full(4, 1.0, np.float32), "delta.b": np.full(5, 0.0, np.float32), "dc.a": np.full(4, 9.0, np.float32)}
    assert l2_norm(tensors, "delta.") == pytest.approx(2.0)
