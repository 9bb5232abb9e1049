"""The faster training paths compute what the plain ones did, to the bit, at the same seeds.

`ReferenceTrainer` is the local step as it was written before the sweep work (a loop of per-tensor
`add_` calls for the SCAFFOLD correction and the SGD step, `.astype` copies of the update) and
`reference_views` the view expression before it was computed in place. A sweep's table must not move
when only its speed changes, so every comparison here is exact equality, never a tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedser_client.core.augment import StrongView, stochastic_feature_augmentation, weak_views
from fedser_client.core.data import UNLABELED, ClientData
from fedser_client.core.objectives import Objective
from fedser_client.core.state import LocalState
from fedser_client.core.step_loss import StepLoss
from fedser_client.core.trainer import LocalRun, LocalTrainer, ScaffoldTerms, TrainTask
from fedser_shared.config import RunConfig, load_run_config
from fedser_shared.model import EmotionMLP, build_model, weights_of
from fedser_shared.tensor_names import CONTROL, DELTA, DELTA_CONTROL, WEIGHT

D, C = 12, 4


def reference_views(x: torch.Tensor, shape: tuple[int, ...], sigma1: float, sigma2: float, seed: int) -> torch.Tensor:
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    return x + torch.sqrt(sigma1**2 * x * x + sigma2**2) * noise


class ReferenceTrainer(LocalTrainer):
    """The local steps and the update as they were computed before: one tensor at a time."""

    def _local_steps(self, objective: Objective, task: TrainTask, correction: list[torch.Tensor] | None) -> LocalRun:
        params = list(self.model.parameters())
        lr = task.lr

        def step() -> None:
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-lr)

        gen = self._generator(task.round, "train")
        self.model.train()
        loss_sum = torch.zeros(())
        steps, outcomes = 0, []
        for _ in range(task.local_epochs):
            for batch in objective.batches(gen):
                outcome = objective.loss(self.model, batch, gen)
                grads = torch.autograd.grad(outcome.loss.value, params)
                for index, (p, grad) in enumerate(zip(params, grads)):
                    p.grad = grad if correction is None else grad.add_(correction[index])
                step()
                steps += 1
                loss_sum += outcome.loss.value.detach()
                outcomes.append(outcome)
        rows, labels, candidates, passed = objective.summarise(outcomes)
        return LocalRun(steps, float(loss_sum) / max(steps, 1), rows, labels, candidates, passed)

    def _update_and_control(self, global_state: Mapping[str, np.ndarray], scaffold: ScaffoldTerms | None,
                            steps: int, lr: float, control: dict[str, np.ndarray], empty: bool
                            ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        update: dict[str, np.ndarray] = {}
        new_control = dict(control)
        for index, (name, p) in enumerate(self.model.named_parameters()):
            theta = np.asarray(global_state[WEIGHT + name], dtype=np.float32)
            delta = np.zeros_like(theta) if empty else p.detach().cpu().numpy().astype(np.float32) - theta
            update[DELTA + name] = delta
            if scaffold is None:
                continue
            c_i = scaffold.client_c[index].cpu().numpy().astype(np.float32)
            c_plus = c_i if empty or not steps else c_i - scaffold.server_c[index].cpu().numpy() - delta / (steps * lr)
            update[DELTA_CONTROL + name] = (c_plus - c_i).astype(np.float32)
            new_control[CONTROL + name] = c_plus.astype(np.float32)
        return update, new_control


def client(labeled_share: float, seed: int = 0, n: int = 96) -> ClientData:
    rng = np.random.default_rng(seed)
    truth = (np.arange(n) % C).astype(np.int64)
    x = (rng.normal(size=(n, D)) + 2.0 * np.eye(C, D)[truth]).astype(np.float32)
    shown = np.where(rng.random(n) < labeled_share, truth, UNLABELED)
    return ClientData(x, shown, x[:0], truth[:0], hidden_labels=np.where(shown == UNLABELED, truth, UNLABELED))


def config(**overrides: object) -> RunConfig:
    # dropout on and small batches: every random draw of a step is exercised; kappa loose enough to take labels
    return load_run_config(None, {"model.hidden": [16, 8], "model.dropout": 0.2, "train.batch_size": 8,
                                  "semi.uncertainty_max": 0.2, "semi.temperature": 1.0, "semi.max_per_class": 2,
                                  **overrides})


def participations(trainer_type: Callable[..., LocalTrainer], run_config: RunConfig, data: ClientData,
                   scaffold: bool, rounds: int = 4) -> list[tuple[dict[str, np.ndarray], LocalState, tuple[object, ...]]]:
    """`rounds` participations of one client, each from a global state that moves, with every output kept."""
    theta = weights_of(build_model(D, C, [16, 8], 0.2, seed=3))
    rng = np.random.default_rng(9)
    trainer = trainer_type(run_config, data, 11)
    state, out = LocalState(), []
    for round_index in range(1, rounds + 1):
        global_state = {k: v + (0.3 * rng.normal(size=v.shape)).astype(np.float32) for k, v in theta.items()}
        if scaffold:
            global_state.update({CONTROL + k[2:]: (0.01 * rng.normal(size=v.shape)).astype(np.float32)
                                 for k, v in theta.items()})
        update, state, report = trainer.train(global_state, TrainTask(round_index, 0.1, 2, 0.4), state)
        metrics = replace(report.metrics, train_seconds=0.0)  # everything a participation reports but its clock
        out.append((update, state, (metrics, report.pseudo_rows.tolist(), report.pseudo_labels.tolist())))
    return out


def assert_same(ours: list, theirs: list) -> None:  # type: ignore[type-arg]
    for (update, state, report), (ref_update, ref_state, ref_report) in zip(ours, theirs, strict=True):
        assert report == ref_report
        assert update.keys() == ref_update.keys()
        for name in update:
            assert update[name].dtype == ref_update[name].dtype and update[name].tobytes() == ref_update[name].tobytes(), name
        assert state.control.keys() == ref_state.control.keys()
        for name in state.control:
            assert state.control[name].tobytes() == ref_state.control[name].tobytes(), name
        np.testing.assert_array_equal(state.pseudo_index, ref_state.pseudo_index)
        np.testing.assert_array_equal(state.pseudo_label, ref_state.pseudo_label)


@pytest.mark.parametrize("method, labeled_share, scaffold", [
    ("supervised", 1.0, True), ("mvpl", 0.3, True), ("mvpl", 0.0, False), ("fixmatch", 0.3, True)])
def test_local_training_gives_the_reference_path_s_bits(method: str, labeled_share: float, scaffold: bool) -> None:
    semi = {} if method == "supervised" else {"semi.enabled": True, "semi.method": method,
                                              "semi.fixmatch_threshold": 0.5, "semi.unlabeled_ratio": 2}
    run_config = config(**{"federation.algorithm": "scaffold" if scaffold else "fedavg", **semi})
    data = client(labeled_share)
    ours = participations(LocalTrainer, run_config, data, scaffold)
    assert_same(ours, participations(ReferenceTrainer, run_config, data, scaffold))
    if method == "mvpl":  # the comparison covered a growing pool, not only empty ones
        assert len(ours[-1][1].pseudo_index) > 0


def test_the_comparison_sees_a_one_bit_difference() -> None:
    """The reference comparison is strict enough to fail: a learning rate one float32 step away shows."""
    run_config = config(**{"federation.algorithm": "scaffold"})
    data = client(1.0)
    ours = participations(LocalTrainer, run_config, data, scaffold=True, rounds=1)

    class Nudged(ReferenceTrainer):
        def train(self, global_state, task, local_state):  # type: ignore[no-untyped-def]
            return super().train(global_state, TrainTask(task.round, float(np.nextafter(np.float32(task.lr), np.float32(1.0))),
                                                         task.local_epochs, task.pseudo_threshold), local_state)

    with pytest.raises(AssertionError):
        assert_same(ours, participations(Nudged, run_config, data, scaffold=True, rounds=1))


def test_views_computed_in_place_match_the_expression() -> None:
    x = torch.randn(7, D, generator=torch.Generator().manual_seed(1)) * 3.0
    for sigma1, sigma2 in [(0.1, 0.1), (0.25, 0.1)]:
        stacked = weak_views(x, 10, sigma1, sigma2, torch.Generator().manual_seed(5))
        assert torch.equal(stacked, reference_views(x, (10, *x.shape), sigma1, sigma2, seed=5))
        single = stochastic_feature_augmentation(x, sigma1, sigma2, torch.Generator().manual_seed(6))
        assert torch.equal(single, reference_views(x, tuple(x.shape), sigma1, sigma2, seed=6))
        strong = StrongView(sigma1, sigma2)(x, torch.Generator().manual_seed(7))
        assert torch.equal(strong, reference_views(x, tuple(x.shape), sigma1, sigma2, seed=7))
    assert torch.equal(x, torch.randn(7, D, generator=torch.Generator().manual_seed(1)) * 3.0)  # input untouched


def reference_loss(model: EmotionMLP, kind: str, x: list[torch.Tensor], y: list[torch.Tensor], weights: torch.Tensor,
                   mask: torch.Tensor, factors: tuple[float, float], seed: int) -> torch.Tensor:
    """A step's loss as the objectives wrote it before, for autograd: labeled term (or zero) + pseudo term."""
    gen = torch.Generator().manual_seed(seed)
    loss = torch.zeros(()) if kind.startswith("0") else F.cross_entropy(model(x[0], gen), y[0], weight=weights)
    if kind.endswith("+weighted"):
        loss = loss + factors[0] * F.cross_entropy(model(x[1], gen), y[1], weight=weights) * factors[1]
    elif kind.endswith("+masked"):
        loss = loss + factors[0] * (F.cross_entropy(model(x[1], gen), y[1], reduction="none") * mask).mean()
    return loss


def written_out_loss(model: EmotionMLP, kind: str, x: list[torch.Tensor], y: list[torch.Tensor], weights: torch.Tensor,
                     mask: torch.Tensor, factors: tuple[float, float], seed: int) -> StepLoss:
    gen = torch.Generator().manual_seed(seed)
    loss = StepLoss.zero(torch.device("cpu")) if kind.startswith("0") else StepLoss.weighted_ce(model, x[0], y[0], weights, gen)
    if kind.endswith("+weighted"):
        loss = loss + StepLoss.weighted_ce(model, x[1], y[1], weights, gen).times(factors[0]).times(factors[1])
    elif kind.endswith("+masked"):
        loss = loss + StepLoss.masked_mean_ce(model, x[1], y[1], mask, gen).times(factors[0])
    return loss


@pytest.mark.parametrize("hidden, dropout", [((16, 8), 0.2), ((16,), 0.0), ((), 0.3)])
@pytest.mark.parametrize("kind", ["weighted", "weighted+weighted", "weighted+masked", "0+weighted", "0+masked"])
def test_written_out_gradient_has_autograd_s_bits(hidden: tuple[int, ...], dropout: float, kind: str) -> None:
    """StepLoss's value and gradient against autograd on the expressions it replaced: batches of 1 row up,
    factors that are not powers of two, a FixMatch mask."""
    torch.manual_seed(0)
    model = EmotionMLP(D, C, hidden, dropout)
    params = list(model.parameters())
    weights = torch.tensor([0.7, 1.3, 0.9, 1.1])
    for case, rows in enumerate([1, 2, 7, 16, 17]):
        x = [torch.randn(rows, D) * 2.0, torch.randn(rows, D)]
        y = [torch.randint(C, (rows,)), torch.randint(C, (rows,))]
        mask = torch.rand(rows) > 0.5
        factors = (0.3, rows / 16)
        expected = reference_loss(model, kind, x, y, weights, mask, factors, seed=case)
        expected_grads = torch.autograd.grad(expected, params)
        with torch.no_grad():
            loss = written_out_loss(model, kind, x, y, weights, mask, factors, seed=case)
            grads = loss.gradients(model)
        assert loss.value.numpy().tobytes() == expected.detach().numpy().tobytes()
        assert len(grads) == len(expected_grads)
        for ours, theirs in zip(grads, expected_grads):
            assert ours.shape == theirs.shape and ours.numpy().tobytes() == theirs.numpy().tobytes()
