"""Semi-supervised objectives on a client without labels: MvPL from the first participation,
FixMatch on every step, and the empty participation when nothing is confident enough."""

from __future__ import annotations

import numpy as np

from fedser_client.core.data import UNLABELED, ClientData
from fedser_client.core.state import LocalState
from fedser_client.core.trainer import LocalTrainer, TrainTask
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
    assert report.metrics.pseudo_taken_per_class == (2, 2, 2, 2) and report.metrics.pseudo_correct_per_class == (2, 2, 2, 2)
    assert len(state.pseudo_index) == 8 and report.metrics.n_samples == 8 and report.metrics.local_steps == 1
    assert report.metrics.pseudo_candidates == 48 and report.metrics.pseudo_pass_tau >= report.metrics.pseudo_pass_kappa >= 8
    assert any(np.abs(v).max() > 0 for v in update.values())


def test_fixmatch_trains_a_label_free_client_on_every_confident_row() -> None:
    data = label_free()
    config = semi_config("fixmatch", **{"semi.fixmatch_threshold": 0.9, "semi.unlabeled_ratio": 1})
    trainer = LocalTrainer(config, data, client_seed=3)
    update, state, report = trainer.train(confident_global(data, scaffold=True), TrainTask(1, 0.1, 1), LocalState())
    assert report.metrics.local_steps == 6 and report.metrics.pseudo_candidates == 48  # 48 rows in batches of 8, each seen once
    assert report.metrics.n_samples == report.metrics.pseudo_pass_tau == 48 and report.metrics.n_pseudo == 48
    assert sum(report.metrics.pseudo_correct_per_class) == 48
    assert any(np.abs(v).max() > 0 for k, v in update.items() if k.startswith("dc."))
    assert not len(state.pseudo_index)  # FixMatch keeps no pool: each step labels afresh


def test_alignment_labels_a_confident_client_and_a_label_free_one_aligns_nothing() -> None:
    data = label_free()
    config = semi_config("fixmatch", **{"semi.distribution_alignment": True, "semi.fixmatch_threshold": 0.9})
    global_state = confident_global(data, scaffold=False)
    _, _, aligned = LocalTrainer(config, data, 3).train(global_state, TrainTask(1, 0.1), LocalState())
    plain = semi_config("fixmatch", **{"semi.fixmatch_threshold": 0.9})
    _, _, unaligned = LocalTrainer(plain, data, 3).train(global_state, TrainTask(1, 0.1), LocalState())
    # no labels, no prior: a uniform one would push predictions towards classes the client may lack
    assert aligned.metrics.pseudo_taken_per_class == unaligned.metrics.pseudo_taken_per_class and aligned.metrics.n_samples == 48


def test_alignment_never_labels_a_class_the_client_has_no_label_of() -> None:
    rng = np.random.default_rng(4)
    truth = (np.arange(64) % C).astype(np.int64)
    x = (rng.normal(size=(64, D)) * 0.1 + 3.0 * np.eye(C, D)[truth]).astype(np.float32)
    shown = np.where((np.arange(64) < 16) & (truth != 3), truth, UNLABELED)  # labels of classes 0-2 only
    data = ClientData(x, shown, x[:0], truth[:0], hidden_labels=np.where(shown == UNLABELED, truth, UNLABELED))
    config = semi_config("fixmatch", **{"semi.distribution_alignment": True, "semi.fixmatch_threshold": 0.5})
    _, _, report = LocalTrainer(config, data, 3).train(confident_global(data, scaffold=False), TrainTask(1, 0.1),
                                                       LocalState())
    assert report.metrics.pseudo_taken_per_class[3] == 0 and sum(report.metrics.pseudo_taken_per_class) > 0


def test_nothing_confident_is_an_empty_participation_that_keeps_c_i() -> None:
    data = label_free()
    c_i = {"c." + n[2:]: np.full_like(v, 0.3) for n, v in weights_of(build_model(D, C, [8], 0.0, seed=1)).items()}
    trainer = LocalTrainer(semi_config("fixmatch", **{"semi.fixmatch_threshold": 1.0}), data, client_seed=3)
    update, state, report = trainer.train(confident_global(data, scaffold=True), TrainTask(1, 0.1),
                                          LocalState(control=dict(c_i)))
    assert report.metrics.n_samples == 0 and report.metrics.pseudo_pass_tau == 0
    assert all(not np.any(v) for v in update.values())  # zero delta and zero dc: nothing for the server to add
    assert all(np.array_equal(state.control[k], v) for k, v in c_i.items()) and state.participations == 1


def partly_labeled(n: int = 64, labeled: int = 16, seed: int = 5) -> ClientData:
    rng = np.random.default_rng(seed)
    truth = (np.arange(n) % C).astype(np.int64)
    x = (rng.normal(size=(n, D)) * 0.1 + 3.0 * np.eye(C, D)[truth]).astype(np.float32)
    shown = np.where(np.arange(n) < labeled, truth, UNLABELED)
    return ClientData(x, shown, x[:0], truth[:0], hidden_labels=np.where(shown == UNLABELED, truth, UNLABELED))


def test_every_method_takes_the_steps_of_the_labeled_rows() -> None:
    data = partly_labeled()  # 16 labeled rows in batches of 8: 2 steps, whatever the unlabeled rows add
    global_state = confident_global(data, scaffold=False)
    for method, extra in (("supervised", {}), ("mvpl", {}), ("fixmatch", {"semi.unlabeled_ratio": 1}),
                          ("fixmatch", {"semi.unlabeled_ratio": 7})):
        state = LocalState(participations=1)
        _, _, report = LocalTrainer(semi_config(method, **extra), data, 3).train(global_state, TrainTask(2, 0.1, 1, 0.6), state)
        assert report.metrics.local_steps == 2, method
        if method == "fixmatch":  # mu * B unlabeled rows per step, from the 48 unlabeled rows
            assert report.metrics.pseudo_candidates == 2 * min(48, 8 * extra["semi.unlabeled_ratio"])


def test_the_fair_supervised_baseline_sends_an_empty_participation_from_a_label_free_client() -> None:
    data = label_free()
    config = semi_config("supervised")
    update, state, report = LocalTrainer(config, data, 3).train(confident_global(data, scaffold=True), TrainTask(1, 0.1),
                                                                LocalState())
    assert report.metrics.n_samples == 0 and report.metrics.local_steps == 0 and sum(report.metrics.pseudo_taken_per_class) == 0
    assert all(not np.any(v) for v in update.values()) and state.participations == 1


def test_the_fair_supervised_baseline_trains_on_weak_views_of_the_labels() -> None:
    data = partly_labeled()
    global_state = confident_global(data, scaffold=False)
    plain, _, _ = LocalTrainer(load_run_config(None, {"model.hidden": [8], "model.dropout": 0.0, "train.batch_size": 8}),
                               data, 3).train(global_state, TrainTask(1, 0.1), LocalState())
    weak, _, report = LocalTrainer(semi_config("supervised"), data, 3).train(global_state, TrainTask(1, 0.1), LocalState())
    assert report.metrics.n_samples == 16 and report.metrics.local_steps == 2 and report.metrics.n_pseudo == 0
    assert any(not np.allclose(plain[k], weak[k]) for k in plain)  # the views differ from the plain rows


def test_cross_speaker_strong_views_still_train_fixmatch() -> None:
    data = label_free()
    bank = np.stack([np.stack([np.full(D, 1.2, np.float32), np.full(D, 0.1, np.float32)])])
    styled = ClientData(data.x_train, data.y_train, data.x_eval, data.y_eval, data.hidden_labels, style_bank=bank)
    config = semi_config("fixmatch", **{"semi.fixmatch_threshold": 0.9, "semi.strong_mixup": 0.3,
                                        "semi.strong_mask": 0.1, "semi.strong_style": True})
    update, _, report = LocalTrainer(config, styled, 3).train(confident_global(data, scaffold=False), TrainTask(1, 0.1),
                                                              LocalState())
    assert report.metrics.n_samples == 48 and sum(report.metrics.pseudo_correct_per_class) == 48
    assert any(np.abs(v).max() > 0 for v in update.values())
