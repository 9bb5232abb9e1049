"""Server aggregation rules of DESIGN §5, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from fedser_server.core.strategy import FedAvg, Scaffold, Strategy, aggregate
from fedser_server.engine.sums import RecycledSums, RunningSum, WeightedSums
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
    new = aggregate(strategy, strategy.initial_state(W), [(update([1.0, 0.0], [[2.0]]), 1), (update([4.0, 3.0], [[-1.0]]), 3)],
                    n_registered=5)
    # mean: a = (1*[1,0] + 3*[4,3]) / 4 = [3.25, 2.25]; b = (2 - 3) / 4 = -0.25
    np.testing.assert_allclose(new["w.a"], W["w.a"] + 0.5 * np.array([3.25, 2.25]), rtol=1e-6)
    np.testing.assert_allclose(new["w.b"], W["w.b"] + 0.5 * np.array([[-0.25]]), rtol=1e-6)


def scaffold_round(c_update: str, n_registered: int) -> dict[str, np.ndarray]:
    strategy = Scaffold(server_lr=1.0, c_update=c_update)  # type: ignore[arg-type]
    state = strategy.initial_state(W)
    state["c.a"] = np.array([0.1, 0.2], np.float32)
    return aggregate(strategy, state, [(update([0.0, 0.0], [[0.0]], [1.0, -1.0], [[2.0]]), 10),
                                       (update([0.0, 0.0], [[0.0]], [3.0, 1.0], [[0.0]]), 30)], n_registered)


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
    new = aggregate(strategy, state, [], 3)
    assert all(np.array_equal(new[k], state[k]) for k in state)
    kept = WeightedSums(strategy, state, 3).new_state()
    assert all(np.array_equal(kept[k], state[k]) for k in state)


@pytest.mark.parametrize("strategy", [FedAvg(server_lr=0.7), Scaffold(c_update="paper")])
def test_an_update_folded_in_runs_gives_bit_identical_state_written_where_asked(strategy: Strategy) -> None:
    rng = np.random.default_rng(3)
    state = strategy.initial_state({"w.a": rng.normal(size=(40, 30)).astype(np.float32),
                                    "w.b": rng.normal(size=7).astype(np.float32)})
    updates = [({name: rng.normal(size=spec.shape).astype(np.float32) for name, spec in strategy.expected_update(state).items()}, n)
               for n in (3, 11, 5)]
    whole = aggregate(strategy, state, updates, 4)

    sums = WeightedSums(strategy, state, 4)
    for update, n in updates:  # runs of 13 elements, the last tensor first: any cover of the elements
        runs = [(name, start, value.reshape(-1)[start : start + 13])
                for name, value in reversed(list(update.items())) for start in range(0, value.size, 13)]
        sums.add_runs(runs, n)
    into = {name: np.full_like(value, np.nan) for name, value in state.items()}
    in_runs = sums.new_state(into)
    assert all(in_runs[name] is into[name] for name in state)
    for name in state:
        assert in_runs[name].tobytes() == whole[name].tobytes()


@pytest.mark.parametrize("strategy", [FedAvg(server_lr=0.7), Scaffold(c_update="paper")])
def test_sums_recycled_round_after_round_give_the_fresh_sums_bits(strategy: Strategy) -> None:
    rng = np.random.default_rng(5)
    state = strategy.initial_state({"w.a": rng.normal(size=(300, 900)).astype(np.float32),
                                    "w.b": rng.normal(size=7).astype(np.float32)})
    fresh, recycled, pool = state, state, RecycledSums()
    handed_out: list[np.ndarray] = []  # kept alive, so that their ids cannot be reused

    def new_sum(count: int) -> RunningSum:
        running = pool(count)
        handed_out.append(running.flat)
        return running

    for _ in range(3):
        updates = [({name: rng.normal(size=spec.shape).astype(np.float32)
                     for name, spec in strategy.expected_update(state).items()}, n) for n in (3, 11)]
        plain, reused = WeightedSums(strategy, fresh, 4), WeightedSums(strategy, recycled, 4, new_sum)
        for update, n in updates:
            plain.add(update, n)
            reused.add(update, n)
        fresh, recycled = plain.new_state(), reused.new_state()
        assert all(fresh[name].tobytes() == recycled[name].tobytes() for name in state)
    assert len({id(flat) for flat in handed_out}) == len(strategy.expected_update(state))  # the same arrays every round


def test_an_update_without_samples_is_refused() -> None:
    strategy = FedAvg()
    sums = WeightedSums(strategy, strategy.initial_state(W), 1)
    with pytest.raises(InvalidUpdateError, match="positive"):
        sums.add(update([1.0, 0.0], [[2.0]]), n_samples=0)
    with pytest.raises(InvalidUpdateError, match="positive"):
        aggregate(strategy, strategy.initial_state(W), [(update([1.0, 0.0], [[2.0]]), 0)], 1)
