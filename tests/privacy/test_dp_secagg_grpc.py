"""DP-FedAvg with client daemons over real gRPC: four daemons train on real audio, clip to C and (distributed
mode) add their share of the noise, before masking under secure aggregation; the server unmasks the sum. The
model after one round differs from the same round without noise by noise of std z*C/m per coordinate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedser_client.app import build_daemon
from fedser_client.local_store import LocalStore
from fedser_client.prepare import PreparedData, prepare_client_data
from fedser_server import app as server_app
from fedser_shared.config import RunConfig, load_run_config
from fedser_shared.secagg import VectorLayout
from fedser_shared.weights import initial_weights
from fedser_sim.inprocess_engine import federate, make_clients
from tests.conftest import make_client_dir
from tests.privacy.daemons import running

pytestmark = pytest.mark.timeout(300)

CLIENTS, CLIP, Z = 4, 0.05, 4.0


def config_for(mode: str, noise_multiplier: float, secure: str = "secagg+") -> RunConfig:
    return load_run_config(None, {
        "federation.rounds": 1, "federation.fraction": 1.0, "federation.min_clients": CLIENTS,
        "federation.eval_every": 10, "federation.poll_timeout_s": 5.0, "federation.round_timeout_s": 120.0,
        "federation.eval_timeout_s": 10.0, "federation.seed": 5, "train.lr": 0.1,
        "privacy.secure_aggregation": secure, "privacy.secagg_stage_timeout_s": 30.0,
        "privacy.dp": mode, "privacy.clip_norm": CLIP, "privacy.noise_multiplier": noise_multiplier})


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, PreparedData]]:
    root = tmp_path_factory.mktemp("clients")
    config = config_for("distributed", 0.0)
    dirs = {f"client{i}": make_client_dir(root, f"client{i}", per_class=3, seed=i) for i in range(CLIENTS)}
    return {name: (d, prepare_client_data(d, config, LocalStore(d).feature_cache_dir, name)) for name, d in dirs.items()}


def change_of_one_round(config: RunConfig, state_dir: Path, clients: dict[str, tuple[Path, PreparedData]]) -> np.ndarray:
    """The global model's change over the run's one round, as one flat vector."""
    server = server_app.start(config, "127.0.0.1:0", state_dir)
    daemons = [build_daemon(f"127.0.0.1:{server.port}", data_dir, config, name, "cpu", connect_timeout_s=30,
                            prepared=prepared) for name, (data_dir, prepared) in clients.items()]
    try:
        with running(daemons):
            assert server.wait(timeout=240), "the federation did not finish"
            state = {k: v.astype(np.float64) for k, v in server.coordinator.state.items()}
            assert server.coordinator.history[-1]["n_updates"] == CLIENTS
    finally:
        server.shutdown()
    fed = config.federation
    start = initial_weights(config.feature_dim, config.num_classes, config.model.hidden, fed.seed)
    return np.concatenate([(state[n] - start[n]).reshape(-1) for n in sorted(state)])


@pytest.fixture(scope="module")
def without_noise(clients: dict[str, tuple[Path, PreparedData]], tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return change_of_one_round(config_for("distributed", 0.0), tmp_path_factory.mktemp("run") / "state", clients)


def test_without_noise_the_round_is_the_mean_of_updates_clipped_on_the_clients(without_noise: np.ndarray) -> None:
    # every client's change was cut to C before masking: the mean of four has norm at most C (up to rounding)
    assert 0.2 * CLIP < np.linalg.norm(without_noise) <= CLIP * 1.001


def test_the_grpc_round_is_the_in_process_engines(without_noise: np.ndarray,
                                                  clients: dict[str, tuple[Path, PreparedData]]) -> None:
    """The daemons and the server reach the model the in-process engine makes from the same data (the same
    clip, weights and sum), up to the rounding of secure aggregation."""
    config = config_for("distributed", 0.0)
    result = next(iter(federate(config, make_clients(config, {n: p.data for n, (_, p) in clients.items()}),
                                config.feature_dim)))
    fed = config.federation
    start = initial_weights(config.feature_dim, config.num_classes, config.model.hidden, fed.seed)
    in_process = np.concatenate([(result.state[n].astype(np.float64) - start[n]).reshape(-1) for n in sorted(start)])
    privacy = config.privacy
    layout = VectorLayout.of({"delta.x": (1,)}, CLIENTS, privacy.secagg_max_weight, privacy.secagg_clip_norm,
                             privacy.secagg_control_clip_norm)
    quantum = 1 / layout.scale_of("delta.x")  # one rounding step of the mean, per element
    assert np.abs(in_process).max() > 100 * quantum
    np.testing.assert_allclose(without_noise, in_process, atol=3 * quantum + 1e-7, rtol=0)


@pytest.mark.parametrize(("mode", "secure"), [("distributed", "secagg+"), ("central", "secagg+"), ("distributed", "off")])
def test_noise_on_the_round_has_std_z_c_over_m(mode: str, secure: str, without_noise: np.ndarray, tmp_path: Path,
                                               clients: dict[str, tuple[Path, PreparedData]]) -> None:
    """distributed: each client added N(0, (zC)^2/m) (before masking, under secure aggregation); central: the
    server added N(0, (zC)^2) to the unmasked sum. Either way the mean of m = 4 updates moves by z*C/m per
    coordinate (the baseline is secure: quantisation moves it by far less than that)."""
    noisy = change_of_one_round(config_for(mode, Z, secure), tmp_path / "state", clients)
    difference = noisy - without_noise
    expected = Z * CLIP / CLIENTS
    assert np.std(difference) == pytest.approx(expected, rel=0.1)
    assert abs(np.mean(difference)) < 0.05 * expected
