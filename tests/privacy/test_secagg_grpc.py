"""Secure aggregation over real gRPC: a server and four client daemons on loopback, one of which
dies in the middle of the round; the server ends with the model of plain FedAvg over the three
that finished, and nothing it stores holds one client's update."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedser_client.app import build_daemon
from fedser_client.local_store import LocalStore
from fedser_client.prepare import prepare_client_data
from fedser_server import app as server_app
from fedser_server.core.strategy import aggregate, make_strategy
from fedser_shared.config import load_run_config
from fedser_shared.secagg import VectorLayout
from fedser_shared.weights import initial_weights
from tests.conftest import make_client_dir
from tests.privacy.daemons import running

pytestmark = pytest.mark.timeout(300)


def config_for(secure: bool):
    return load_run_config(None, {
        "federation.algorithm": "fedavg", "federation.rounds": 1, "federation.fraction": 1.0,
        "federation.min_clients": 4, "federation.min_updates": 3, "federation.eval_every": 10,
        "federation.poll_timeout_s": 5.0, "federation.round_timeout_s": 120.0, "federation.seed": 5,
        "train.lr": 0.1, "privacy.secure_aggregation": "secagg+" if secure else "off",
        "privacy.secagg_stage_timeout_s": 8.0, "federation.eval_timeout_s": 10.0})


def test_a_client_dying_after_the_share_stage_leaves_fedavg_of_the_survivors(tmp_path: Path) -> None:
    config = config_for(secure=True)
    root = tmp_path / "clients"
    dirs = {f"client{i}": make_client_dir(root, f"client{i}", per_class=4, seed=i) for i in range(4)}
    prepared = {name: prepare_client_data(d, config, LocalStore(d).feature_cache_dir, name) for name, d in dirs.items()}
    updates: dict[str, tuple[dict[str, np.ndarray], int]] = {}

    def observer_for(name):
        def observe(round_index, global_state, update, report):
            updates[name] = ({k: v.copy() for k, v in update.items()}, report.metrics.n_samples)
        return observe

    server = server_app.start(config, "127.0.0.1:0", tmp_path / "server")
    daemons = [build_daemon(f"127.0.0.1:{server.port}", data_dir, config, name, "cpu", connect_timeout_s=30,
                            prepared=prepared[name], observer=observer_for(name)) for name, data_dir in dirs.items()]
    daemons[3].secure_stop_after = "share"  # client3: keys and shares sent, then gone before its masked input
    try:
        with running(daemons):
            assert server.wait(timeout=240), "the federation did not finish"
            state = {k: v.copy() for k, v in server.coordinator.state.items()}
            record = server.coordinator.history[-1]
            joined_with = sorted(tuple(c.label_counts) + (c.n_unlabeled,)
                                 for c in server.coordinator.registry.clients.values())
    finally:
        server.shutdown()

    assert "client3" not in updates and sorted(updates) == ["client0", "client1", "client2"]
    assert record["n_updates"] == 3
    # each client has 12 labels over 4 classes; the server learned only that it has labels at all
    assert joined_with == [(1, 0, 0, 0, 0)] * 4
    # the same round by plain FedAvg over the three survivors' updates
    fed = config.federation
    strategy = make_strategy("fedavg", fed.server_lr, fed.c_update)
    start = strategy.initial_state(initial_weights(config.feature_dim, config.num_classes, config.model.hidden, fed.seed))
    expected = aggregate(strategy, start, list(updates.values()), 4)
    # up to quantisation: each survivor's rounding moves an element by less than one quantum
    privacy = config.privacy
    layout = VectorLayout.of({n: v.shape for n, v in next(iter(updates.values()))[0].items()}, 4,
                             privacy.secagg_max_weight, privacy.secagg_clip_norm, privacy.secagg_control_clip_norm)
    total_weight = sum(n for _, n in updates.values())
    for name, value in expected.items():
        quantum = privacy.secagg_max_weight / layout.scale_of("delta." + name[2:]) / total_weight
        moved = np.abs(value - start[name]).max()
        assert moved > 10 * quantum  # the round changed the model far more than rounding can
        np.testing.assert_allclose(state[name], value, atol=3 * quantum + 1e-7, rtol=0, err_msg=name)

    # nothing the server stored holds one client's update: no blob or spill file matches any of them
    stored = b"".join(p.read_bytes() for p in (tmp_path / "server").rglob("*") if p.is_file())
    for update, _ in updates.values():
        for name, value in update.items():
            if value.size >= 16:
                assert value.astype("<f4").tobytes()[:64] not in stored, f"{name} of a client is on the server's disk"
