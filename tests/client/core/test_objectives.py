"""Semi-supervised objectives on a client without labels: MvPL from the first participation,
FixMatch on every step, and the empty participation when nothing is confident enough."""

from __future__ import annotations

import numpy as np

from fedser_client.core.data import UNLABELED, ClientData
from fedser_client.core.trainer import LocalState, LocalTrainer, TrainTask
from fedser_shared.config import RunConfig, load_run_config
from fedser_shared.model import build_model, weights_of

D, C = 6, 4


def label_free(n: int = 48, seed: int = 0) -> ClientData:
    """Well separated classes, every label hidden (the truth kept to count correct pseudo-labels)."""
    rng = np.random.default_rng(seed)
    truth = (np.arange(n) % C).astype(np.int64)
    x = (rng.normal(size=(n, D)) * 0.1 + 3.0 * np.eye(C, D)[truth]).astype(np.float32)
    return ClientData(x, np.full(n, UNLABELED, np.int64), x[:0], truth[:0], hidden_labels=truth)


def confident_global(data: ClientData, scaffold: bool) -> dict[str, np.ndarray]:
    """A global model trained (centrally, on the hidden truth) until it is sure of these rows."""
    config = load_run_config(None, {"model.hidden": [8], "model.dropout": 0.0, "train.batch_size": 1000})
    teacher = LocalTrainer(config, ClientData(data.x_train, data.hidden_labels, data.x_eval, data.y_eval), 1)
    theta = weights_of(build_model(D, C, [8], 0.0, seed=1))
    delta, _, _ = teacher.train(theta, TrainTask(round=1, lr=0.5, local_epochs=200), LocalState())
    state = {n: theta[n] + delta["delta." + n[2:]] for n in theta}
    if scaffold:
        state.update({"c." + n[2:]: np.full_like(v, 0.01) for n, v in theta.items()})
    return state


def semi_config(method: str, **overrides: object) -> RunConfig:
    return load_run_config(None, {"model.hidden": [8], "model.dropout": 0.0, "train.batch_size": 8,
                                  "semi.enabled": True, "semi.method": method, "semi.temperature": 1.0,
                                  "semi.uncertainty_max": 0.5, "semi.max_per_class": 2, **overrides})


def test_mvpl_labels_a_label_free_client_at_its_first_participation() -> None:
    data = label_free()
    trainer = LocalTrainer(semi_config("mvpl"), data, client_seed=3)
    update, state, report = trainer.train(confident_global(data, scaffold=False), TrainTask(1, 0.1, 1, 0.6), LocalState())
    assert report.pseudo_taken_per_class == [2, 2, 2, 2] and report.pseudo_correct_per_class == [2, 2, 2, 2]
    assert len(state.pseudo_index) == 8 and report.n_samples == 8 and report.local_steps == 1
    assert report.pseudo_candidates == 48 and report.pseudo_pass_tau >= report.pseudo_pass_kappa >= 8
    assert any(np.abs(v).max() > 0 for v in update.values())


def test_fixmatch_trains_a_label_free_client_on_every_confident_row() -> None:
    data = label_free()
    trainer = LocalTrainer(semi_config("fixmatch", **{"semi.fixmatch_threshold": 0.9}), data, client_seed=3)
    update, state, report = trainer.train(confident_global(data, scaffold=True), TrainTask(1, 0.1, 1), LocalState())
    assert report.local_steps == 6 and report.pseudo_candidates == 48  # 48 rows in batches of 8, each seen once
    assert report.n_samples == report.pseudo_pass_tau == 48 and report.n_pseudo == 48
    assert sum(report.pseudo_correct_per_class) == 48
    assert any(np.abs(v).max() > 0 for k, v in update.items() if k.startswith("dc."))
    assert not len(state.pseudo_index)  # FixMatch keeps no pool: each step labels afresh


def test_self_adaptive_threshold_and_alignment_still_label_a_confident_client() -> None:
    data = label_free()
    config = semi_config("fixmatch", **{"semi.threshold_mode": "self_adaptive", "semi.distribution_alignment": True})
    _, _, report = LocalTrainer(config, data, 3).train(confident_global(data, scaffold=False), TrainTask(1, 0.1), LocalState())
    assert 0 < report.pseudo_pass_tau <= report.pseudo_candidates and report.n_samples > 0


def test_nothing_confident_is_an_empty_participation_that_keeps_c_i() -> None:
    data = label_free()
    c_i = {"c." + n[2:]: np.full_like(v, 0.3) for n, v in weights_of(build_model(D, C, [8], 0.0, seed=1)).items()}
    trainer = LocalTrainer(semi_config("fixmatch", **{"semi.fixmatch_threshold": 1.0}), data, client_seed=3)
    update, state, report = trainer.train(confident_global(data, scaffold=True), TrainTask(1, 0.1),
                                          LocalState(control=dict(c_i)))
    assert report.n_samples == 0 and report.pseudo_pass_tau == 0
    assert all(not np.any(v) for v in update.values())  # zero delta and zero dc: nothing for the server to add
    assert all(np.array_equal(state.control[k], v) for k, v in c_i.items()) and state.participations == 1
