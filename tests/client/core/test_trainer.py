"""LocalTrainer against hand computations: SCAFFOLD option II, zero init, Adam, MvPL bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedser_client.core.data import UNLABELED, ClientData
from fedser_client.core.losses import class_balanced_weights
from fedser_client.core.state import LocalState
from fedser_client.core.trainer import LocalTrainer, TrainTask
from fedser_shared.config import RunConfig, load_run_config
from fedser_shared.model import EmotionMLP, build_model, load_weights, weights_of

D, C = 6, 4


def small_config(**overrides: object) -> RunConfig:
    return load_run_config(None, {"model.hidden": [8], "model.dropout": 0.0, "train.batch_size": 1000, **overrides})


def labeled_data(n: int = 40, seed: int = 0) -> ClientData:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3  # this client lacks class 3
    x = rng.normal(size=(n, D)).astype(np.float32) + y[:, None].astype(np.float32)
    return ClientData(x, y.astype(np.int64), x[:4], y[:4].astype(np.int64))


def random_like(state: dict[str, np.ndarray], prefix: str, seed: int, scale: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {prefix + name[2:]: (scale * rng.normal(size=v.shape)).astype(np.float32) for name, v in state.items()}


def gradient(model: EmotionMLP, x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> list[torch.Tensor]:
    model.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y), weight=torch.tensor(weights, dtype=torch.float32))
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_scaffold_local_steps_and_control_update_match_the_hand_computation() -> None:
    config = small_config()
    data = labeled_data()
    theta = weights_of(build_model(D, C, [8], 0.0, seed=1))
    c = random_like(theta, "c.", seed=2)
    c_i = random_like(theta, "c.", seed=3)
    lr, steps = 0.1, 3  # full batch: one local step per epoch
    update, new_state, report = LocalTrainer(config, data, client_seed=5).train(
        {**theta, **c}, TrainTask(round=1, lr=lr, local_epochs=steps), LocalState(control=dict(c_i)))

    # by hand: y <- y - lr (g(y) + c - c_i), K times; c_i+ = c_i - c + (theta - y) / (K lr)
    model = EmotionMLP(D, C, [8], 0.0)
    load_weights(model, theta)
    names = [n for n, _ in model.named_parameters()]
    cw = class_balanced_weights(data.label_counts(C), config.train.class_balance_beta)
    for _ in range(steps):
        grads = gradient(model, data.x_train, data.y_train, cw)
        with torch.no_grad():
            for name, p, g in zip(names, model.parameters(), grads):
                p -= lr * (g + torch.from_numpy(c["c." + name]) - torch.from_numpy(c_i["c." + name]))
    y_local = weights_of(model)
    assert report.metrics.local_steps == steps and report.metrics.n_samples == len(data.y_train)
    for name in names:
        delta = y_local["w." + name] - theta["w." + name]
        c_plus = c_i["c." + name] - c["c." + name] - delta / (steps * lr)
        np.testing.assert_allclose(update["delta." + name], delta, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(update["dc." + name], c_plus - c_i["c." + name], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(new_state.control["c." + name], c_plus, rtol=1e-4, atol=1e-5)
    assert new_state.participations == 1


def test_zero_control_variates_make_the_first_scaffold_step_a_fedavg_step() -> None:
    config = small_config()
    data = labeled_data()
    theta = weights_of(build_model(D, C, [8], 0.0, seed=1))
    zeros = {"c." + n[2:]: np.zeros_like(v) for n, v in theta.items()}
    task = TrainTask(round=1, lr=0.05, local_epochs=2)
    scaffold_update, state, _ = LocalTrainer(config, data, 5).train({**theta, **zeros}, task, LocalState())
    fedavg_update, fedavg_state, _ = LocalTrainer(config, data, 5).train(theta, task, LocalState())
    assert set(fedavg_update) == {"delta." + n[2:] for n in theta} and not fedavg_state.control
    for n in theta:
        name = n[2:]
        np.testing.assert_array_equal(scaffold_update["delta." + name], fedavg_update["delta." + name])
        # c = c_i = 0: c_i+ = -delta / (K lr), the mean gradient along the path
        np.testing.assert_allclose(state.control["c." + name], -scaffold_update["delta." + name] / (2 * 0.05), rtol=1e-5, atol=1e-7)


def test_adam_gets_the_correction_on_the_gradient_before_its_step() -> None:
    config = small_config(**{"train.optimizer": "adam"})
    data = labeled_data()
    theta = weights_of(build_model(D, C, [8], 0.0, seed=1))
    c, c_i = random_like(theta, "c.", 2, scale=0.5), random_like(theta, "c.", 3, scale=0.5)
    lr = 0.01
    update, _, _ = LocalTrainer(config, data, 5).train({**theta, **c}, TrainTask(1, lr, 2), LocalState(control=dict(c_i)))

    model = EmotionMLP(D, C, [8], 0.0)
    load_weights(model, theta)
    t = config.train
    adam = torch.optim.Adam(model.parameters(), lr=lr, betas=t.adam_betas, eps=t.adam_eps, weight_decay=t.adam_weight_decay)
    cw = class_balanced_weights(data.label_counts(C), t.class_balance_beta)
    for _ in range(2):
        grads = gradient(model, data.x_train, data.y_train, cw)
        for (name, p), g in zip(model.named_parameters(), grads):
            p.grad = g + torch.from_numpy(c["c." + name]) - torch.from_numpy(c_i["c." + name])
        adam.step()
    for name, value in weights_of(model).items():
        np.testing.assert_allclose(update["delta." + name[2:]], value - theta[name], rtol=1e-4, atol=1e-6)


def test_each_participation_starts_with_fresh_optimizer_moments() -> None:
    config = small_config(**{"train.optimizer": "adam"})
    trainer = LocalTrainer(config, labeled_data(), 5)
    theta = weights_of(build_model(D, C, [8], 0.0, seed=1))
    first, _, _ = trainer.train(theta, TrainTask(1, 0.01, 2), LocalState())
    again, _, _ = trainer.train(theta, TrainTask(1, 0.01, 2), LocalState())
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])


def confident_model_state() -> dict[str, np.ndarray]:
    """A model that maps x = 3 e_k to class k with near certainty (hidden [C, C], identity weights)."""
    model = EmotionMLP(C, C, [C, C], 0.0)
    with torch.no_grad():
        for layer in [*model.hidden, model.head]:
            layer.weight.copy_(10.0 * torch.eye(C))
            layer.bias.zero_()
    return weights_of(model)


def test_pseudo_labels_start_at_the_second_participation_one_per_class_and_are_scored() -> None:
    config = load_run_config(None, {"model.hidden": [C, C], "model.dropout": 0.0, "semi.enabled": True,
                                    "federation.algorithm": "scaffold"})
    labeled_y = np.array([0, 1, 2, 3])
    unlabeled_truth = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    x = 3.0 * np.eye(C, dtype=np.float32)[np.concatenate([labeled_y, unlabeled_truth])]
    y = np.concatenate([labeled_y, np.full(8, UNLABELED)])
    hidden = np.concatenate([np.full(4, UNLABELED), unlabeled_truth])
    hidden[-1] = 0  # the truth of one class-3-looking sample is class 0: its pseudo-label is wrong
    data = ClientData(x, y.astype(np.int64), x[:1], labeled_y[:1], hidden.astype(np.int64))
    trainer = LocalTrainer(config, data, 5)
    task = TrainTask(round=2, lr=0.0 + 1e-12, local_epochs=1, pseudo_threshold=0.9)
    state = LocalState()
    _, state, first = trainer.train(confident_model_state(), task, state)
    assert first.metrics.pseudo_taken_per_class == (0, 0, 0, 0) and len(state.pseudo_index) == 0

    taken_rows = []
    for expected_n_pseudo in (4, 8):
        _, state, report = trainer.train(confident_model_state(), task, state)
        assert report.metrics.pseudo_taken_per_class == (1, 1, 1, 1)
        assert report.metrics.n_pseudo == expected_n_pseudo and report.metrics.n_samples == 4 + expected_n_pseudo
        taken_rows.append(state.pseudo_index[-4:])
        np.testing.assert_array_equal(state.pseudo_label[-4:], [0, 1, 2, 3])
        assert report.metrics.pseudo_with_truth == 4
        wrong = int(11 in state.pseudo_index[-4:])  # row 11 is the sample whose truth is 0
        assert report.metrics.pseudo_correct_per_class == (1, 1, 1, 1 - wrong)
    assert len(set(np.concatenate(taken_rows).tolist())) == 8  # a pooled sample is never selected again
    _, state, last = trainer.train(confident_model_state(), task, state)
    assert last.metrics.pseudo_taken_per_class == (0, 0, 0, 0)


def test_disabled_semi_never_pseudo_labels() -> None:
    config = load_run_config(None, {"model.hidden": [C, C], "model.dropout": 0.0})
    x = 3.0 * np.eye(C, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    data = ClientData(x, np.array([0, 1, 2, 3, UNLABELED, UNLABELED]), x[:1], np.array([0]))
    trainer = LocalTrainer(config, data, 5)
    state = LocalState()
    for _ in range(3):
        _, state, report = trainer.train(confident_model_state(), TrainTask(1, 1e-6, 1, 0.5), state)
        assert sum(report.metrics.pseudo_taken_per_class) == 0 and report.metrics.n_samples == 4


def test_evaluation_uses_eval_mode_and_the_eval_split() -> None:
    config = load_run_config(None, {"model.hidden": [C, C], "model.dropout": 0.5})
    x = 3.0 * np.eye(C, dtype=np.float32)
    data = ClientData(x, np.arange(C), np.concatenate([x, x]), np.array([0, 1, 2, 3, 0, 1, 2, 3]))
    confusion, loss = LocalTrainer(config, data, 5).evaluate(confident_model_state())
    np.testing.assert_array_equal(confusion, 2 * np.eye(C, dtype=np.int64))  # dropout off: deterministic, all right
    assert loss == pytest.approx(0.0, abs=1e-6)
