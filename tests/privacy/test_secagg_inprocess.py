"""The in-process engine under secure aggregation: the same protocol code as the gRPC engine, and
the same model as plain aggregation up to quantisation (FedAvg and SCAFFOLD)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedser_client.core.trainer import TrainTask
from fedser_server.core.strategy import aggregate, make_strategy
from fedser_server.engine.sums import WeightedSums
from fedser_shared.errors import BelowThresholdError
from fedser_shared.weights import initial_weights
from fedser_sim.inprocess_engine import federate, make_clients
from fedser_sim.secure_round import Contribution, aggregate_securely
from tests.server.core.test_scaffold_vs_fedavg import D, config_for, non_iid_clients


@pytest.mark.parametrize("algorithm", ["fedavg", "scaffold"])
def test_a_secure_federation_reaches_the_plain_model_up_to_quantisation(algorithm):
    datas = non_iid_clients()
    plain = list(federate(config_for(algorithm, 3), make_clients(config_for(algorithm, 3), datas), D))
    config = config_for(algorithm, 3, **{"privacy.secure_aggregation": "secagg+"})
    secure = list(federate(config, make_clients(config, datas), D))
    for ours, theirs in zip(secure, plain, strict=True):
        assert ours.secure is not None and len(ours.secure.result.survivors) == 4
        assert set(ours.state) == set(theirs.state)
        for name, value in theirs.state.items():
            np.testing.assert_allclose(ours.state[name], value, atol=1e-4, err_msg=name)
    moved = sum(float(np.abs(secure[-1].state[n] - secure[0].state[n]).max()) for n in secure[0].state)
    assert moved > 1e-2  # the models trained: the comparison is not between two untouched states


def _round_inputs(n_clients: int):
    config = config_for("scaffold", 1, **{"privacy.secure_aggregation": "secagg+", "federation.min_clients": 2})
    datas = dict(list(non_iid_clients().items())[:n_clients])
    clients = make_clients(config, datas)
    fed = config.federation
    strategy = make_strategy(fed.algorithm, fed.server_lr, fed.c_update)
    state = strategy.initial_state(initial_weights(D, config.num_classes, config.model.hidden, fed.seed))
    task = TrainTask(round=1, lr=0.3, local_epochs=1, pseudo_threshold=0.9)
    contributions = {}
    for name, client in clients.items():
        update, _, report = client.trainer.train(state, task, client.state)
        contributions[name] = Contribution(update, report.metrics.n_samples)
    return config, strategy, state, contributions


def test_a_client_lost_after_masking_leaves_the_sum_of_the_survivors():
    config, strategy, state, contributions = _round_inputs(4)
    theirs = aggregate(make_strategy("scaffold", 1.0, "paper"), state,
                       [(contributions[name].update, contributions[name].n_samples) for name in ["client0", "client1", "client2"]], 4)
    sums = WeightedSums(strategy, state, 4)
    aggregate_securely(strategy, sums, state, contributions, config.privacy, 0, 1, drop_before={"client3": "mask"})
    ours = sums.new_state()
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, atol=1e-4, err_msg=name)


def test_a_round_below_threshold_folds_nothing():
    config, strategy, state, contributions = _round_inputs(4)  # threshold 3 of 4
    sums = WeightedSums(strategy, state, 4)
    with pytest.raises(BelowThresholdError):
        aggregate_securely(strategy, sums, state, contributions, config.privacy, 0, 1,
                           drop_before={"client2": "mask", "client3": "mask"})
    assert sums.n_updates == 0
    unchanged = sums.new_state()
    for name, value in state.items():
        np.testing.assert_array_equal(unchanged[name], value)


@pytest.mark.timeout(300)
def test_fedser_sim_runs_secure_aggregation_in_process_and_refuses_bad_settings(tmp_path):
    from tests.observability.conftest import make_corpus
    from tests.sim.test_sim_cli import _sim

    corpus = make_corpus(tmp_path / "corpus", speakers=3, per_class=2)
    common = ["--corpus", str(corpus), "--clients", "3", "--rounds", "2", "--fraction", "1.0", "--min-clients", "3",
              "--secure-aggregation", "secagg+"]
    proc = _sim(tmp_path, *common, "--engine", "inprocess")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = [json.loads(line) for line in (tmp_path / "run" / "server" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2] and all(r["n_updates"] == 3 for r in rounds)

    for args, needle in [(["--engine", "ray"], "does not support it yet"),
                         (["--engine", "inprocess", "--secure-aggregation", "on"], "privacy.secure_aggregation")]:
        refused = _sim(tmp_path, *common, *args, timeout=120)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert needle in refused.stderr
