"""SCAFFOLD against FedAvg on a synthetic non-IID problem, through the real Strategy and LocalTrainer.

Each client lacks one class, so local steps drift towards never predicting it; SCAFFOLD's control
variates cancel that drift. With one client and full participation both must reduce to plain SGD.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedser_client.core.data import ClientData
from fedser_client.core.losses import class_balanced_weights
from fedser_shared.config import RunConfig, load_run_config
from fedser_shared.model import EmotionMLP, build_model, load_weights, weights_of
from fedser_sim.inprocess_engine import federate, make_clients

D, C = 10, 4


def non_iid_clients(per_class: int = 16, seed: int = 0) -> dict[str, ClientData]:
    rng = np.random.default_rng(seed)
    means = 0.8 * rng.normal(size=(C, D))  # overlapping classes: the clients' optima conflict
    clients = {}
    for missing in range(C):
        y = np.repeat([k for k in range(C) if k != missing], per_class)
        x = (means[y] + rng.normal(size=(len(y), D))).astype(np.float32)
        clients[f"client{missing}"] = ClientData(x, y.astype(np.int64), x[:0], y[:0].astype(np.int64))
    return clients


def config_for(algorithm: str, rounds: int, **extra: object) -> RunConfig:
    return load_run_config(None, {
        "federation.algorithm": algorithm, "federation.rounds": rounds, "federation.fraction": 1.0,
        "federation.min_clients": 1, "federation.seed": 3, "model.hidden": [16], "model.dropout": 0.0,
        "train.lr": 0.3, "train.local_epochs": 10, "train.class_balance_beta": 0.0, **extra})


def global_loss(state: dict[str, np.ndarray], datas: dict[str, ClientData]) -> float:
    model = EmotionMLP(D, C, [16], 0.0)
    load_weights(model, state)
    x = torch.from_numpy(np.concatenate([d.x_train for d in datas.values()]))
    y = torch.from_numpy(np.concatenate([d.y_train for d in datas.values()]))
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x), y))


def final_state(config: RunConfig, datas: dict[str, ClientData]) -> dict[str, np.ndarray]:
    *_, last = federate(config, make_clients(config, datas), D)
    return last.state


@pytest.mark.timeout(1200)  # 2 x 20 rounds of real training: ~5 minutes on a box at load 15; a hang guard, not a deadline
def test_scaffold_reaches_a_clearly_lower_global_loss_than_fedavg_in_the_same_rounds() -> None:
    datas = non_iid_clients()
    fedavg = global_loss(final_state(config_for("fedavg", 20), datas), datas)
    scaffold = global_loss(final_state(config_for("scaffold", 20), datas), datas)
    assert scaffold < 0.6 * fedavg, (scaffold, fedavg)


def test_with_one_client_and_full_participation_both_are_plain_sgd() -> None:
    datas = {"only": non_iid_clients()["client0"]}
    n = len(datas["only"].y_train)
    rounds, epochs = 3, 2
    lr = config_for("fedavg", rounds).train.lr
    extra = {"train.batch_size": n, "train.local_epochs": epochs}  # full batch: the step order is fixed
    states = {a: final_state(config_for(a, rounds, **extra), datas) for a in ("fedavg", "scaffold")}

    model = build_model(D, C, [16], 0.0, seed=3)  # the run's initial weights
    weights = torch.tensor(class_balanced_weights(datas["only"].label_counts(C), 0.0), dtype=torch.float32)
    sgd = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = torch.from_numpy(datas["only"].x_train), torch.from_numpy(datas["only"].y_train)
    for _ in range(rounds * epochs):
        sgd.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y, weight=weights).backward()
        sgd.step()
    expected = weights_of(model)
    for name, value in expected.items():
        np.testing.assert_allclose(states["fedavg"][name], value, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(states["scaffold"][name], value, rtol=1e-4, atol=1e-6)
    # c tracks the single client's c_i, so the correction c - c_i stays zero
    assert any(np.abs(v).max() > 0 for k, v in states["scaffold"].items() if k.startswith("c."))
