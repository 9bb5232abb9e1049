"""DP-FedAvg's core: the accountant's epsilon, the budget stop, clipping, the noise's scale, the noised sum."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.rdp import RdpAccountant

from fedser_server.core.dp import (
    DpFedAvg,
    DpRounds,
    PrivacyBudgetReached,
    adapt_clip_norm,
    dp_rounds,
    epsilon,
    noise_for_epsilon,
    plan_privacy,
)
from fedser_server.engine.sums import WeightedSums
from fedser_shared.config import PrivacyConfig, load_run_config
from fedser_shared.dp import add_gaussian_noise, client_noise_std, clip_update, update_norm
from fedser_shared.errors import ConfigError


def _update(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {"delta.a": (scale * rng.normal(size=(30, 20))).astype(np.float32),
            "delta.b": (scale * rng.normal(size=20)).astype(np.float32)}


def test_epsilon_grows_with_rounds_and_matches_dp_accounting_directly() -> None:
    values = [epsilon(rounds, 0.2, 1.1, 1e-5) for rounds in (1, 10, 50, 200)]
    assert values == sorted(values) and values[0] < values[-1]
    direct = RdpAccountant()
    direct.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(1.1)), 50))
    assert values[2] == pytest.approx(direct.get_epsilon(1e-5), rel=0.02)
    assert epsilon(50, 0.2, 0.0, 1e-5) == math.inf
    assert epsilon(0, 0.2, 1.1, 1e-5) == 0.0


def test_noise_for_a_target_epsilon_spends_that_epsilon_over_the_planned_rounds() -> None:
    z = noise_for_epsilon(8.0, 100, 0.2, 1e-5)
    assert epsilon(100, 0.2, z, 1e-5) == pytest.approx(8.0, rel=1e-3)
    assert noise_for_epsilon(1.0, 100, 0.2, 1e-5) > z > noise_for_epsilon(64.0, 100, 0.2, 1e-5)


def test_a_budget_stops_before_the_round_that_would_exceed_it() -> None:
    plan = plan_privacy("central", 1.0, None, 1e-5, 5.0, 100, 4, 20)
    spent = [plan.epsilon_after(r) for r in range(1, 100)]
    last_ok = max(r for r, e in enumerate(spent, start=1) if e <= 5.0)
    rounds = DpRounds(plan, 1.0)
    rounds.check_budget(last_ok)  # fits
    with pytest.raises(PrivacyBudgetReached, match=r"round \d+ would spend epsilon .* > privacy.epsilon_budget 5"):
        rounds.check_budget(last_ok + 1)


def test_clipping_bounds_the_norm_and_leaves_small_updates_alone() -> None:
    rng = np.random.default_rng(0)
    big = _update(rng, 10.0)
    clipped, norm = clip_update(big, 2.0)
    assert norm == pytest.approx(update_norm(big)) and norm > 2.0
    assert update_norm(clipped) == pytest.approx(2.0, rel=1e-5)
    assert np.allclose(clipped["delta.a"] / big["delta.a"], 2.0 / norm, rtol=1e-5)  # direction kept
    small = _update(rng, 0.001)
    same, _ = clip_update(small, 2.0)
    assert all(np.array_equal(same[k], small[k]) for k in small)


def test_client_noise_sums_to_the_central_noise_scale() -> None:
    rng = np.random.default_rng(1)
    zero = {"delta.a": np.zeros(200_000, np.float32)}
    n, z, clip = 8, 1.3, 0.5
    total = sum(add_gaussian_noise(zero, client_noise_std(z, clip, n), rng)["delta.a"].astype(np.float64) for _ in range(n))
    assert np.std(total) == pytest.approx(z * clip, rel=0.01)
    assert abs(np.mean(total)) < 0.01 * z * clip


def test_central_dp_adds_noise_of_std_z_c_to_the_sum_and_weighs_every_update_once() -> None:
    state = {"w.a": np.zeros((30, 20), np.float32), "w.b": np.zeros(20, np.float32)}
    update = {"delta.a": np.ones((30, 20), np.float32), "delta.b": np.ones(20, np.float32)}
    quiet = DpFedAvg(1.0, np.random.default_rng(0))
    sums = WeightedSums(quiet, state, 4)
    sums.add(update, 1000)
    sums.add({k: 3 * v for k, v in update.items()}, 1)
    assert np.allclose(sums.new_state()["w.a"], 2.0)  # unweighted mean: n_samples does not count
    noisy = DpFedAvg(1.0, np.random.default_rng(0))
    noisy.noise_std = 4.0
    sums = WeightedSums(noisy, state, 4)
    for _ in range(2):
        sums.add(update, 10)
    new = sums.new_state()
    # mean of 2 updates of ones plus N(0, 4^2)/2 per coordinate
    assert np.std(new["w.a"]) == pytest.approx(2.0, rel=0.15)
    assert np.mean(new["w.a"]) == pytest.approx(1.0, abs=0.3)


def test_distributed_mode_clips_and_noises_on_the_client_and_central_mode_on_the_server() -> None:
    rng = np.random.default_rng(2)
    big = _update(rng, 10.0)
    distributed = dp_rounds(PrivacyConfig(dp="distributed", clip_norm=1.0, noise_multiplier=0.0), 10, 4, 20)
    sent, norm = distributed.release(big, 4, rng)
    assert norm > 1.0 and update_norm(sent) == pytest.approx(1.0, rel=1e-5)
    assert distributed.sum_noise_std == 0.0
    central = dp_rounds(PrivacyConfig(dp="central", clip_norm=1.0, noise_multiplier=2.0), 10, 4, 20)
    sent, _ = central.release(big, 4, rng)
    assert update_norm(sent) == pytest.approx(update_norm(big))  # the client sends it as is
    assert update_norm(central.receive(sent)) == pytest.approx(1.0, rel=1e-5)
    assert central.sum_noise_std == 2.0


def test_adaptive_clipping_moves_toward_the_target_quantile() -> None:
    rng = np.random.default_rng(3)
    norms = rng.uniform(0.0, 2.0, 400)  # median 1.0
    clip = 0.1
    for _ in range(60):
        clip = adapt_clip_norm(clip, norms, 0.5, 0.2, 1.0, rng)
    assert clip == pytest.approx(1.0, rel=0.15)


def test_config_refuses_dp_without_one_noise_source_and_dp_with_scaffold() -> None:
    with pytest.raises(ConfigError, match="exactly one of noise_multiplier and target_epsilon"):
        load_run_config(None, {"privacy.dp": "central"})
    with pytest.raises(ConfigError, match="needs federation.algorithm = 'fedavg'"):
        load_run_config(None, {"privacy.dp": "central", "privacy.noise_multiplier": 1.0, "federation.algorithm": "scaffold"})
    with pytest.raises(ConfigError, match="privacy.clip_norm"):
        load_run_config(None, {"privacy.clip_norm": 0})
