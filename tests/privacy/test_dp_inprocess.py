"""DP-FedAvg in the in-process engine, with and without secure aggregation: the same clipped mean, and noise
of the scale the accountant was told."""

from __future__ import annotations

import numpy as np
import pytest

from fedser_client.core.data import ClientData
from fedser_shared.config import load_run_config
from fedser_shared.weights import initial_weights
from fedser_sim.inprocess_engine import federate, make_clients


def _clients(config, n: int = 6):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    datas = {f"c{i}": ClientData(rng.normal(size=(24, 12)).astype(np.float32), rng.integers(0, 4, 24),
                                 np.zeros((0, 12), np.float32), np.zeros(0, np.int64)) for i in range(n)}
    return make_clients(config, datas)


def _first_round(overrides: dict[str, object]) -> tuple[dict[str, np.ndarray], int]:
    config = load_run_config(None, {"federation.rounds": 1, "federation.fraction": 0.5, "train.eval_fraction": 0.0,
                                    "model.hidden": [16], **overrides})
    result = next(iter(federate(config, _clients(config), 12)))
    start = initial_weights(12, 4, [16], 0)
    return {n: result.state[n].astype(np.float64) - start[n] for n in result.state}, len(result.sampled)


def test_secure_aggregation_gives_the_clipped_unweighted_mean_of_plain_dp() -> None:
    clip = {"privacy.dp": "distributed", "privacy.noise_multiplier": 0.0, "privacy.clip_norm": 0.01}
    plain, _ = _first_round(clip)
    secure, _ = _first_round({**clip, "privacy.secure_aggregation": "secagg+"})
    undefended, _ = _first_round({})
    for name in plain:
        assert np.allclose(plain[name], secure[name], atol=1e-6)  # up to quantisation
    # the clip bites: every client's change was cut to 0.01, so the mean is much smaller than without DP
    norm = np.sqrt(sum(float((v ** 2).sum()) for v in plain.values()))
    assert norm <= 0.01 + 1e-6 < np.sqrt(sum(float((v ** 2).sum()) for v in undefended.values()))


@pytest.mark.parametrize("mode", ["distributed", "central"])
def test_the_mean_change_carries_noise_of_std_z_c_over_m(mode: str) -> None:
    z, clip = 40.0, 0.01
    change, m = _first_round({"privacy.dp": mode, "privacy.noise_multiplier": z, "privacy.clip_norm": clip,
                              "privacy.secure_aggregation": "secagg+"})
    values = np.concatenate([v.reshape(-1) for v in change.values()])
    # the clipped signal (norm <= 0.01) is negligible next to the noise, z*C/m per coordinate
    assert np.std(values) == pytest.approx(z * clip / m, rel=0.05)
