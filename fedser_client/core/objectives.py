"""Local training objectives: which rows each step sees and the loss it takes (DESIGN §5).

- `Supervised`: class-balanced CE on the labeled rows (semi-supervised training off).
- `MultiviewPseudoLabels` (`semi.method = "mvpl"`, the paper): CB-CE on a weak view of the
  labeled batch + lambda * CB-CE on a strong view of a batch of the client's MvPL pool, scaled by
  |pseudo batch| / batch size; a client without labels trains on its pool alone.
- `FixMatch` (`semi.method = "fixmatch"`): every step also draws mu * B unlabeled rows; the model's
  prediction on a weak view, where confident, is the target of a strong view (Sohn et al. 2020).
  Options: distribution alignment (ReMixMatch) and a self-adaptive, class-wise threshold (FreeMatch),
  both estimated once per participation from the received model on the client's unlabeled rows.

An objective yields batches (row indices into x_train) and turns a batch into a `StepOutcome`;
nothing here reads a tensor back to the host before `summarise`, after the last step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from fedser_client.core.augment import stochastic_feature_augmentation
from fedser_client.core.losses import class_balanced_ce
from fedser_shared.config import RunConfig, SemiConfig

if TYPE_CHECKING:
    from fedser_client.core.data import ClientData
    from fedser_client.core.trainer import LocalState


@dataclass(frozen=True)
class Batch:
    labeled: torch.Tensor     # rows with a true label
    unlabeled: torch.Tensor   # rows without one (MvPL: pool positions; FixMatch: rows of x_train)


@dataclass(frozen=True)
class StepOutcome:
    loss: torch.Tensor
    rows: torch.Tensor | None = None      # unlabeled rows this step looked at
    labels: torch.Tensor | None = None    # the (pseudo-)label each of them got
    used: torch.Tensor | None = None      # which of them trained (FixMatch: passed the threshold); None = all
    candidates: int = 0                   # unlabeled predictions examined in this step


Summary = tuple[np.ndarray, np.ndarray, int, int]


class Objective(Protocol):
    def batches(self, gen: torch.Generator) -> Iterator[Batch]: ...
    def loss(self, model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> StepOutcome: ...
    def summarise(self, outcomes: Sequence[StepOutcome]) -> Summary: ...


class Cycler:
    """Endless batches over `rows`, reshuffled on each pass."""

    def __init__(self, rows: torch.Tensor, size: int, gen: torch.Generator) -> None:
        self.rows, self.size, self.gen = rows, size, gen
        self._order, self._pos = rows[:0], 0

    def next(self) -> torch.Tensor:
        if self._pos >= len(self._order):
            self._order = self.rows[torch.randperm(len(self.rows), generator=self.gen, device=self.rows.device)]
            self._pos = 0
        pick = self._order[self._pos : self._pos + self.size]
        self._pos += len(pick)
        return pick


def one_pass(rows: torch.Tensor, size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    order = rows[torch.randperm(len(rows), generator=gen, device=rows.device)]
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _distinct_last(rows: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row once, with the label it last trained with."""
    if rows.size == 0:
        return rows.astype(np.int64), labels.astype(np.int64)
    reversed_rows = rows[::-1]
    unique, first = np.unique(reversed_rows, return_index=True)
    return unique.astype(np.int64), labels[::-1][first].astype(np.int64)


def _summarise(outcomes: Sequence[StepOutcome]) -> Summary:
    """Rows that trained (each once, with its last label), candidates examined and how many passed;
    the only place the steps' bookkeeping is read back from the device."""
    looked = [o for o in outcomes if o.rows is not None]
    if not looked:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0, 0
    rows = torch.cat([o.rows for o in looked]).cpu().numpy()  # type: ignore[misc]
    labels = torch.cat([o.labels for o in looked]).cpu().numpy()  # type: ignore[misc]
    used = torch.cat([o.used if o.used is not None else torch.ones_like(o.rows, dtype=torch.bool)  # type: ignore[arg-type]
                      for o in looked]).cpu().numpy()
    distinct, label = _distinct_last(rows[used], labels[used])
    return distinct, label, sum(o.candidates for o in looked), int(used.sum())


def weak_labeled_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, semi: SemiConfig,
                      class_weights: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """CB-CE on a weak view of the labeled rows of a step (zero when the step has none)."""
    if len(rows) == 0:
        return torch.zeros((), device=x.device)
    weak = stochastic_feature_augmentation(x[rows], semi.weak_sigma1, semi.weak_sigma2, gen)
    return class_balanced_ce(model(weak, gen), y[rows], class_weights)


class Supervised:
    def __init__(self, x: torch.Tensor, y: torch.Tensor, labeled: torch.Tensor, batch_size: int,
                 class_weights: torch.Tensor) -> None:
        self.x, self.y, self.labeled, self.batch_size, self.class_weights = x, y, labeled, batch_size, class_weights

    def batches(self, gen: torch.Generator) -> Iterator[Batch]:
        for pick in one_pass(self.labeled, self.batch_size, gen):
            yield Batch(pick, self.labeled[:0])

    def loss(self, model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> StepOutcome:
        return StepOutcome(class_balanced_ce(model(self.x[batch.labeled], gen), self.y[batch.labeled], self.class_weights))

    def summarise(self, outcomes: Sequence[StepOutcome]) -> Summary:
        return _summarise(outcomes)


class MultiviewPseudoLabels:
    def __init__(self, config: RunConfig, x: torch.Tensor, y: torch.Tensor, labeled: torch.Tensor,
                 pool_rows: torch.Tensor, pool_labels: torch.Tensor, class_weights: torch.Tensor) -> None:
        self.semi, self.batch_size = config.semi, config.train.batch_size
        self.x, self.y, self.labeled, self.class_weights = x, y, labeled, class_weights
        self.pool_rows, self.pool_labels = pool_rows, pool_labels

    def batches(self, gen: torch.Generator) -> Iterator[Batch]:
        if len(self.labeled) == 0:  # no labels: the pool is the whole objective
            positions = torch.arange(len(self.pool_rows), device=self.pool_rows.device)
            for pick in one_pass(positions, self.batch_size, gen):
                yield Batch(self.labeled[:0], pick)
            return
        pool = Cycler(torch.arange(len(self.pool_rows), device=self.pool_rows.device), self.batch_size, gen)
        for pick in one_pass(self.labeled, self.batch_size, gen):
            yield Batch(pick, pool.next() if len(self.pool_rows) else self.labeled[:0])

    def loss(self, model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> StepOutcome:
        semi = self.semi
        loss = weak_labeled_loss(model, self.x, self.y, batch.labeled, semi, self.class_weights, gen)
        if len(batch.unlabeled) == 0:
            return StepOutcome(loss)
        rows, targets = self.pool_rows[batch.unlabeled], self.pool_labels[batch.unlabeled]
        strong = stochastic_feature_augmentation(self.x[rows], semi.strong_sigma1, semi.strong_sigma2, gen)
        share = len(batch.unlabeled) / self.batch_size if len(batch.labeled) else 1.0
        loss = loss + semi.pseudo_weight * class_balanced_ce(model(strong, gen), targets, self.class_weights) * share
        return StepOutcome(loss, rows, targets)

    def summarise(self, outcomes: Sequence[StepOutcome]) -> Summary:
        rows, labels, _, _ = _summarise(outcomes)
        return rows, labels, 0, 0  # MvPL's candidates and passes are counted when the pool grows


class FixMatch:
    def __init__(self, config: RunConfig, x: torch.Tensor, y: torch.Tensor, labeled: torch.Tensor,
                 unlabeled: torch.Tensor, class_weights: torch.Tensor, label_prior: torch.Tensor,
                 model: torch.nn.Module) -> None:
        self.semi, self.batch_size = config.semi, config.train.batch_size
        self.x, self.y, self.labeled, self.unlabeled, self.class_weights = x, y, labeled, unlabeled, class_weights
        self.alignment: torch.Tensor | None = None
        self.thresholds = torch.full((config.num_classes,), self.semi.fixmatch_threshold, device=x.device)
        if len(unlabeled) and (self.semi.distribution_alignment or self.semi.threshold_mode == "self_adaptive"):
            self._estimate(model, label_prior)

    def _estimate(self, model: torch.nn.Module, label_prior: torch.Tensor) -> None:
        """One pass of the received model over the unlabeled rows: the mean prediction (for
        alignment: p <- p * prior / mean, renormalised) and FreeMatch's self-adaptive thresholds
        tau_c = mean max-probability * mean_c / max_c mean."""
        model.eval()
        with torch.no_grad():
            probs = torch.softmax(model(self.x[self.unlabeled]), dim=1)
        model.train()
        mean = probs.mean(dim=0).clamp_min(1e-6)
        if self.semi.distribution_alignment:
            self.alignment = label_prior / mean
            probs = self._align(probs)
            mean = probs.mean(dim=0).clamp_min(1e-6)
        if self.semi.threshold_mode == "self_adaptive":
            global_tau = probs.max(dim=1).values.mean()
            self.thresholds = global_tau * mean / mean.max()

    def _align(self, probs: torch.Tensor) -> torch.Tensor:
        if self.alignment is None:
            return probs
        aligned = probs * self.alignment
        return aligned / aligned.sum(dim=1, keepdim=True)

    def batches(self, gen: torch.Generator) -> Iterator[Batch]:
        unlabeled_size = self.batch_size * self.semi.unlabeled_ratio
        n_steps = math.ceil(max(len(self.labeled) / self.batch_size, len(self.unlabeled) / unlabeled_size))
        labeled = Cycler(self.labeled, self.batch_size, gen) if len(self.labeled) else None
        unlabeled = Cycler(self.unlabeled, unlabeled_size, gen) if len(self.unlabeled) else None
        for _ in range(n_steps):
            yield Batch(labeled.next() if labeled else self.labeled[:0], unlabeled.next() if unlabeled else self.unlabeled[:0])

    def loss(self, model: torch.nn.Module, batch: Batch, gen: torch.Generator) -> StepOutcome:
        semi = self.semi
        loss = weak_labeled_loss(model, self.x, self.y, batch.labeled, semi, self.class_weights, gen)
        if len(batch.unlabeled) == 0:
            return StepOutcome(loss)
        x = self.x[batch.unlabeled]
        with torch.no_grad():
            model.eval()
            weak = stochastic_feature_augmentation(x, semi.weak_sigma1, semi.weak_sigma2, gen)
            probs = self._align(torch.softmax(model(weak), dim=1))
            model.train()
        confidence, target = probs.max(dim=1)
        mask = confidence >= self.thresholds[target]
        strong = stochastic_feature_augmentation(x, semi.strong_sigma1, semi.strong_sigma2, gen)
        per_row = F.cross_entropy(model(strong, gen), target, reduction="none")
        loss = loss + semi.pseudo_weight * (per_row * mask).mean()
        return StepOutcome(loss, batch.unlabeled, target, mask, len(batch.unlabeled))

    def summarise(self, outcomes: Sequence[StepOutcome]) -> Summary:
        return _summarise(outcomes)


def make_objective(config: RunConfig, x: torch.Tensor, y: torch.Tensor, data: ClientData, state: LocalState,
                   class_weights: torch.Tensor, model: torch.nn.Module, device: torch.device) -> Objective:
    labeled = torch.from_numpy(data.labeled_index.astype(np.int64)).to(device)
    batch_size = config.train.batch_size
    if not config.semi.enabled:
        return Supervised(x, y, labeled, batch_size, class_weights)
    if config.semi.method == "mvpl":
        return MultiviewPseudoLabels(config, x, y, labeled, torch.from_numpy(state.pseudo_index).to(device),
                                     torch.from_numpy(state.pseudo_label).to(device), class_weights)
    counts = torch.from_numpy(data.label_counts(config.num_classes).astype(np.float32)).to(device)
    prior = counts / counts.sum() if counts.sum() > 0 else torch.full_like(counts, 1.0 / len(counts))
    unlabeled = torch.from_numpy(data.unlabeled_index.astype(np.int64)).to(device)
    return FixMatch(config, x, y, labeled, unlabeled, class_weights, prior, model)
