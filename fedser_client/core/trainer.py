"""LocalTrainer: one client's local update and evaluation (DESIGN §5).

`train(global_state, task, local_state) -> (update, new_local_state, report)` runs one
participation: optional multiview pseudo-labeling with the received model, then K steps
of SGD/Adam on class-balanced CE, with the SCAFFOLD correction g <- g + c - c_i when the
global state carries a control variate. It returns y - theta (and c_i+ - c_i).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from fedser_client.core.augment import stochastic_feature_augmentation
from fedser_client.core.data import UNLABELED, ClientData
from fedser_client.core.losses import class_balanced_ce, class_balanced_weights
from fedser_client.core.pseudo_label import select_pseudo_labels, view_probabilities
from fedser_shared.config import RunConfig
from fedser_shared.metrics import confusion_matrix
from fedser_shared.model import WEIGHT_PREFIX, EmotionMLP

CONTROL_PREFIX = "c."


@dataclass(frozen=True)
class TrainTask:
    round: int
    lr: float
    local_epochs: int = 1
    pseudo_threshold: float = 0.5


@dataclass(frozen=True)
class LocalState:
    """What a client keeps between participations (persisted under `.fedser/`)."""

    control: dict[str, np.ndarray] = field(default_factory=dict)  # c_i, names "c.<param>"
    pseudo_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pseudo_label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    participations: int = 0


@dataclass(frozen=True)
class TrainReport:
    loss: float
    n_samples: int
    n_labeled: int
    n_pseudo: int
    local_steps: int
    pseudo_taken_per_class: list[int]
    pseudo_correct_per_class: list[int]
    pseudo_with_truth: int
    seconds: float


def stable_seed(*parts: int | str) -> int:
    """A 63-bit seed from ints and strings, equal in every process."""
    ints = [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(2, np.uint64)[0] >> np.uint64(1))


class LocalTrainer:
    def __init__(self, config: RunConfig, data: ClientData, client_seed: int, device: str = "cpu") -> None:
        self.config = config
        self.data = data
        self.client_seed = client_seed
        self.device = torch.device(device)
        self.num_classes = config.num_classes
        self._x_train = torch.from_numpy(np.ascontiguousarray(data.x_train, dtype=np.float32)).to(self.device)
        self._x_eval = torch.from_numpy(np.ascontiguousarray(data.x_eval, dtype=np.float32)).to(self.device)
        self.model = EmotionMLP(data.feature_dim, self.num_classes, config.model.hidden, config.model.dropout).to(self.device)
        counts = data.label_counts(self.num_classes)
        weights = class_balanced_weights(counts, config.train.class_balance_beta)
        self._class_weights = torch.tensor(weights, dtype=torch.float32, device=self.device)

    @property
    def n_labeled(self) -> int:
        return int(len(self.data.labeled_index))

    # -- model I/O -------------------------------------------------------------------
    def _load_global(self, state: Mapping[str, np.ndarray]) -> None:
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                p.copy_(torch.from_numpy(np.asarray(state[WEIGHT_PREFIX + name])).to(self.device))

    def _generator(self, round_index: int, purpose: str) -> torch.Generator:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(stable_seed(self.config.federation.seed, self.client_seed, round_index, purpose))
        return gen

    def _optimizer_step(self, params: list[torch.nn.Parameter], lr: float) -> Callable[[], None]:
        """One optimizer step on the (already corrected) gradients; fresh state per participation.

        SGD is written out (p <- p - lr g): torch.optim's per-step machinery costs more than
        this model's whole backward pass on a small client batch."""
        train = self.config.train
        if train.optimizer == "adam":
            adam = torch.optim.Adam(params, lr=lr, betas=train.adam_betas, eps=train.adam_eps,
                                    weight_decay=train.adam_weight_decay)
            return adam.step

        def sgd() -> None:
            with torch.no_grad():
                for p in params:
                    p.add_(p.grad, alpha=-lr)

        return sgd

    # -- pseudo-labeling ---------------------------------------------------------------
    def _pseudo_label(self, task: TrainTask, state: LocalState) -> tuple[np.ndarray, np.ndarray]:
        """Rows (into x_train) and classes of the pseudo-labels taken in this participation."""
        semi = self.config.semi
        none = np.zeros(0, np.int64)
        pooled = np.zeros(len(self.data.y_train), bool)
        pooled[state.pseudo_index] = True
        candidates = self.data.unlabeled_index[~pooled[self.data.unlabeled_index]].astype(np.int64)
        if not semi.enabled or state.participations < 1 or candidates.size == 0 or semi.max_per_class == 0:
            return none, none
        gen = self._generator(task.round, "mvpl")
        self.model.eval()
        x = self._x_train[torch.from_numpy(candidates).to(self.device)]
        with torch.no_grad():
            views = torch.stack([
                self.model(stochastic_feature_augmentation(x, semi.weak_sigma1, semi.weak_sigma2, gen))
                for _ in range(semi.views)
            ])
            probs = view_probabilities(views, semi.temperature).cpu().numpy()
        chosen = select_pseudo_labels(probs, task.pseudo_threshold, semi.uncertainty_max, semi.max_per_class)
        return candidates[chosen.index].astype(np.int64), chosen.label.astype(np.int64)

    # -- one participation -------------------------------------------------------------
    def train(
        self, global_state: Mapping[str, np.ndarray], task: TrainTask, local_state: LocalState
    ) -> tuple[dict[str, np.ndarray], LocalState, TrainReport]:
        started = time.perf_counter()
        cfg, semi = self.config, self.config.semi
        self._load_global(global_state)
        new_idx, new_lab = self._pseudo_label(task, local_state)
        local_state = replace(local_state, pseudo_index=np.concatenate([local_state.pseudo_index, new_idx]),
                              pseudo_label=np.concatenate([local_state.pseudo_label, new_lab]))
        taken = np.bincount(new_lab, minlength=self.num_classes)
        truth = self.data.hidden_labels[new_idx]
        with_truth = truth != UNLABELED
        correct = np.bincount(new_lab[with_truth & (truth == new_lab)], minlength=self.num_classes)

        params = [p for p in self.model.parameters()]
        names = [name for name, _ in self.model.named_parameters()]
        server_c = [torch.from_numpy(np.asarray(global_state[CONTROL_PREFIX + n])).to(self.device)
                    for n in names] if (CONTROL_PREFIX + names[0]) in global_state else None
        client_c = None
        if server_c is not None:
            client_c = [torch.from_numpy(np.asarray(local_state.control[CONTROL_PREFIX + n])).to(self.device)
                        if (CONTROL_PREFIX + n) in local_state.control else torch.zeros_like(p) for n, p in zip(names, params)]
        correction = [sc - cc for sc, cc in zip(server_c, client_c)] if server_c is not None else None

        step = self._optimizer_step(params, task.lr)

        gen = self._generator(task.round, "train")
        x_train = self._x_train
        pseudo_rows = torch.from_numpy(local_state.pseudo_index).to(self.device)
        pseudo_targets = torch.from_numpy(local_state.pseudo_label).to(self.device)
        if self.n_labeled:
            rows = torch.from_numpy(self.data.labeled_index).to(self.device)
            targets = torch.from_numpy(self.data.y_train[self.data.labeled_index].astype(np.int64)).to(self.device)
            with_pseudo_term = semi.enabled and len(pseudo_rows) > 0
            views, main_weight = (semi.weak_sigma1, semi.weak_sigma2), 1.0
        else:  # a client without labels has only the pseudo-label term: strong views, weight lambda
            rows, targets, with_pseudo_term = pseudo_rows, pseudo_targets, False
            views, main_weight = (semi.strong_sigma1, semi.strong_sigma2), semi.pseudo_weight
        batch = cfg.train.batch_size
        steps, loss_sum = 0, 0.0
        pseudo_order, pseudo_pos = torch.zeros(0, dtype=torch.long), 0
        self.model.train()
        for _ in range(task.local_epochs):
            order = torch.randperm(len(rows), generator=gen, device=self.device)
            for start in range(0, len(order), batch):
                pick = order[start : start + batch]
                x = x_train[rows[pick]]
                if semi.enabled:
                    x = stochastic_feature_augmentation(x, *views, gen)
                loss = main_weight * class_balanced_ce(self.model(x, gen), targets[pick], self._class_weights)
                if with_pseudo_term:
                    if pseudo_pos >= len(pseudo_order):
                        pseudo_order, pseudo_pos = torch.randperm(len(pseudo_rows), generator=gen, device=self.device), 0
                    p_pick = pseudo_order[pseudo_pos : pseudo_pos + batch]
                    pseudo_pos += len(p_pick)
                    xp = stochastic_feature_augmentation(x_train[pseudo_rows[p_pick]], semi.strong_sigma1, semi.strong_sigma2, gen)
                    pseudo_loss = class_balanced_ce(self.model(xp, gen), pseudo_targets[p_pick], self._class_weights)
                    loss = loss + semi.pseudo_weight * pseudo_loss * (len(p_pick) / batch)
                for p in params:
                    p.grad = None
                loss.backward()
                if correction is not None:
                    for p, corr in zip(params, correction):
                        p.grad.add_(corr)
                step()
                steps += 1
                loss_sum += float(loss.detach())

        update: dict[str, np.ndarray] = {}
        new_control: dict[str, np.ndarray] = dict(local_state.control)
        for name, p in zip(names, params):
            theta = np.asarray(global_state[WEIGHT_PREFIX + name], dtype=np.float32)
            y_local = p.detach().cpu().numpy().astype(np.float32)
            update["delta." + name] = y_local - theta
        if server_c is not None and client_c is not None:
            for name, sc, cc in zip(names, server_c, client_c):
                delta = update["delta." + name]
                c_i = cc.cpu().numpy().astype(np.float32)
                c_plus = c_i - sc.cpu().numpy() - delta / (max(steps, 1) * task.lr) if steps else c_i
                update["dc." + name] = (c_plus - c_i).astype(np.float32)
                new_control[CONTROL_PREFIX + name] = c_plus.astype(np.float32)

        n_samples = self.n_labeled + len(local_state.pseudo_index)
        new_state = replace(local_state, control=new_control, participations=local_state.participations + 1)
        report = TrainReport(
            loss=loss_sum / max(steps, 1),
            n_samples=n_samples,
            n_labeled=self.n_labeled,
            n_pseudo=len(local_state.pseudo_index),
            local_steps=steps,
            pseudo_taken_per_class=taken.tolist(),
            pseudo_correct_per_class=correct.tolist(),
            pseudo_with_truth=int(with_truth.sum()),
            seconds=time.perf_counter() - started,
        )
        return update, new_state, report

    def evaluate(self, global_state: Mapping[str, np.ndarray]) -> tuple[np.ndarray, float]:
        """Confusion matrix (rows true) and mean CE loss on the local evaluation split."""
        self._load_global(global_state)
        self.model.eval()
        if len(self.data.y_eval) == 0:
            return np.zeros((self.num_classes, self.num_classes), np.int64), float("nan")
        with torch.no_grad():
            logits = self.model(self._x_eval)
            targets = torch.from_numpy(self.data.y_eval.astype(np.int64)).to(self.device)
            loss = float(torch.nn.functional.cross_entropy(logits, targets))
            predicted = logits.argmax(dim=1).cpu().numpy()
        return confusion_matrix(self.data.y_eval, predicted, self.num_classes), loss
