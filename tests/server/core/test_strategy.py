"""Server aggregation rules of DESIGN §5, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from fedser_server.core.strategy import FedAvg, Scaffold, validate_update
from fedser_shared.errors import InvalidUpdateError

W = {"w.a": np.array([1.0, -2.0], np.float32), "w.b": np.array([[0.5]], np.float32)}


def update(delta_a, delta_b, dc_a=None, dc_b=None) -> dict[str, np.ndarray]:
    out = {"delta.a": np.array(delta_a, np.float32), "delta.b": np.array(delta_b, np.float32)}
    if dc_a is not None:
        out.update({"dc.a": np.array(dc_a, np.float32), "dc.b": np.array(dc_b, np.float32)})
    return out


def test_scaffold_control_variate_starts_at_zero_and_fedavg_sends_none() -> None:
    state = Scaffold().initial_state(W)
    assert set(state) == {"w.a", "w.b", "c.a", "c.b"}
    assert all(not state[name].any() and state[name].shape == W["w" + name[1:]].shape for name in ("c.a", "c.b"))
    assert set(FedAvg().initial_state(W)) == {"w.a", "w.b"}
    assert set(FedAvg().expected_update(FedAvg().initial_state(W))) == {"delta.a", "delta.b"}
    assert set(Scaffold().expected_update(state)) == {"delta.a", "delta.b", "dc.a", "dc.b"}


def test_weights_move_by_the_sample_weighted_mean_times_server_lr() -> None:
    strategy = FedAvg(server_lr=0.5)
    strategy.begin_round(strategy.initial_state(W), n_registered=5)
    strategy.accumulate(update([1.0, 0.0], [[2.0]]), n_samples=1)
    strategy.accumulate(update([4.0, 3.0], [[-1.0]]), n_samples=3)
    new = strategy.finish_round()
    # mean: a = (1*[1,0] + 3*[4,3]) / 4 = [3.25, 2.25]; b = (2 - 3) / 4 = -0.25
    np.testing.assert_allclose(new["w.a"], W["w.a"] + 0.5 * np.array([3.25, 2.25]), rtol=1e-6)
    np.testing.assert_allclose(new["w.b"], W["w.b"] + 0.5 * np.array([[-0.25]]), rtol=1e-6)


def scaffold_round(c_update: str, n_registered: int) -> dict[str, np.ndarray]:
    strategy = Scaffold(server_lr=1.0, c_update=c_update)  # type: ignore[arg-type]
    state = strategy.initial_state(W)
    state["c.a"] = np.array([0.1, 0.2], np.float32)
    strategy.begin_round(state, n_registered)
    strategy.accumulate(update([0.0, 0.0], [[0.0]], [1.0, -1.0], [[2.0]]), n_samples=10)
    strategy.accumulate(update([0.0, 0.0], [[0.0]], [3.0, 1.0], [[0.0]]), n_samples=30)
    return strategy.finish_round()


def test_paper_rule_scales_the_mean_control_step_by_sampled_over_registered() -> None:
    new = scaffold_round("paper", n_registered=8)
    # c <- c + (|S|/N) mean dc = c + (2/8) * [2, 0] for a, (2/8) * [[1]] for b; unweighted by n_samples
    np.testing.assert_allclose(new["c.a"], [0.1 + 0.5, 0.2 + 0.0], rtol=1e-6)
    np.testing.assert_allclose(new["c.b"], [[0.25]], rtol=1e-6)


def test_semifedser_rule_adds_the_plain_mean() -> None:
    new = scaffold_round("semifedser", n_registered=8)
    np.testing.assert_allclose(new["c.a"], [0.1 + 2.0, 0.2 + 0.0], rtol=1e-6)
    np.testing.assert_allclose(new["c.b"], [[1.0]], rtol=1e-6)


def test_full_participation_makes_both_rules_agree() -> None:
    np.testing.assert_allclose(scaffold_round("paper", 2)["c.a"], scaffold_round("semifedser", 2)["c.a"])


def test_a_round_without_updates_keeps_the_state() -> None:
    strategy = Scaffold()
    state = strategy.initial_state(W)
    strategy.begin_round(state, 3)
    new = strategy.finish_round()
    assert all(np.array_equal(new[k], state[k]) for k in state)


@pytest.mark.parametrize("bad, message", [
    ({"delta.a": np.zeros(2, np.float32)}, "names differ"),
    ({"delta.a": np.zeros(3, np.float32), "delta.b": np.zeros((1, 1), np.float32)}, "shape"),
    ({"delta.a": np.zeros(2, np.float64), "delta.b": np.zeros((1, 1), np.float32)}, "dtype"),
    ({"delta.a": np.array([np.nan, 0], np.float32), "delta.b": np.zeros((1, 1), np.float32)}, "NaN"),
])
def test_malformed_updates_are_refused_naming_the_problem(bad: dict, message: str) -> None:
    strategy = FedAvg()
    with pytest.raises(InvalidUpdateError, match=message):
        validate_update(bad, strategy.expected_update(strategy.initial_state(W)))
