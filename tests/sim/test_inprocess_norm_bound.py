"""The in-process engine bounds update norms as the gRPC server does: a 1e6-valued update from
one of four clients is refused (counted, the client's state kept) and the model moves by the
honest clients' mean only."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fedser_client.core.state import LocalState
from fedser_client.core.trainer import TrainReport
from fedser_shared.config import load_run_config
from fedser_shared.train_metrics import TrainMetrics
from fedser_shared.weights import initial_weights
from fedser_sim.inprocess_engine import SimClient, federate


class FixedUpdateTrainer:
    def __init__(self, config, value: float) -> None:
        self.config, self.value, self.n_labeled = config, value, 10
        self.data = SimpleNamespace(unlabeled_index=np.zeros(0, np.int64))

    def train(self, global_state, task, local_state):
        update = {"delta." + k[2:]: np.full(v.shape, self.value, v.dtype) for k, v in global_state.items()}
        report = TrainReport(TrainMetrics(n_samples=10, loss=0.5, n_labeled=10, local_steps=1))
        return update, LocalState(participations=local_state.participations + 1), report


def test_a_poisoned_update_is_refused_in_process_too() -> None:
    config = load_run_config(None, {"federation.rounds": 1, "federation.min_clients": 4, "federation.fraction": 1.0})
    values = {"a": 0.01, "b": 0.01, "c": 0.01, "poisoner": 1e6}
    clients = {name: SimClient(name, FixedUpdateTrainer(config, v), LocalState(), 0) for name, v in values.items()}
    before = initial_weights(config.feature_dim, config.num_classes, config.model.hidden, config.federation.seed)
    (result,) = list(federate(config, clients, config.feature_dim))
    assert result.tally.refused == {"norm_bound": 1} and result.tally.n_updates == 3
    assert clients["poisoner"].state.participations == 0 and clients["a"].state.participations == 1
    np.testing.assert_allclose(result.state["w.head.bias"], before["w.head.bias"] + 0.01, rtol=1e-5)


@pytest.mark.parametrize("privacy", [{}, {"privacy.dp": "central", "privacy.noise_multiplier": 0.0, "privacy.clip_norm": 1.0},
                                     {"privacy.dp": "distributed", "privacy.noise_multiplier": 0.0, "privacy.clip_norm": 1.0},
                                     {"privacy.secure_aggregation": "secagg+"}],
                         ids=["plain", "central-dp", "distributed-dp", "secagg"])
def test_a_nan_update_never_reaches_the_model_whatever_the_privacy_mode(privacy: dict[str, object]) -> None:
    config = load_run_config(None, {"federation.rounds": 1, "federation.min_clients": 4, "federation.fraction": 1.0,
                                    **privacy})
    values = {"a": 0.01, "b": 0.01, "c": 0.01, "diverged": float("nan")}
    clients = {name: SimClient(name, FixedUpdateTrainer(config, v), LocalState(), 0) for name, v in values.items()}
    (result,) = list(federate(config, clients, config.feature_dim))
    assert result.tally.refused == {"invalid_update": 1}
    assert clients["diverged"].state.participations == 0
    assert all(np.isfinite(v).all() for v in result.state.values())
