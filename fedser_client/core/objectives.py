"""Local training objectives: what a participation prepares, which rows each step sees and the loss
it takes (DESIGN §5).

- `Supervised` (semi-supervised training off): class-balanced CE on the labeled rows, no augmentation.
- `LabeledOnly` (`semi.method = "supervised"`): CB-CE on a weak view of each labeled batch. It is the
  labeled term of the two methods below with nothing else: the same views, client sampling (label-free
  clients are sampled and send empty participations) and local steps, so a comparison with it measures
  what the unlabeled audio adds.
- `MultiviewPseudoLabels` (`semi.method = "mvpl"`, the paper): `prepare` grows the client's pool from the
  received model (m weak views of every candidate in one forward pass); each step is CB-CE on a weak view
  of the labeled batch + lambda * CB-CE on a strong view of a pool batch, scaled by |pool batch| / batch
  size. A client without labels trains on its pool alone.
- `FixMatch` (`semi.method = "fixmatch"`): each step also draws mu * B unlabeled rows; the model's
  prediction on a weak view, where confident, is the target of a strong view (Sohn et al. 2020).
  Option: distribution alignment (ReMixMatch) towards the client's labeled prior, estimated in `prepare`.

A client with labels takes the steps of its labeled rows (one pass in batches of B) whatever the
method; a client without labels takes one pass over what it can train on (MvPL: its pool; FixMatch: its
unlabeled rows in batches of mu * B; supervised: nothing). Nothing here reads a tensor back to the host
between `prepare` and `summarise`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Protocol

import numpy as np
import torch

from fedser_client.core.augment import StrongView, stochastic_feature_augmentation, weak_views
from fedser_client.core.pseudo_label import select_pseudo_labels, view_probabilities
from fedser_client.core.state import LocalState
from fedser_client.core.step_loss import StepLoss
from fedser_shared.config import RunConfig, SemiConfig
from fedser_shared.model import EmotionMLP

NO_ROWS = np.zeros(0, np.int64)


@dataclass(frozen=True)
class ClientTensors:
    """A client's training rows on the training device, built once per trainer."""

    x: torch.Tensor
    y: torch.Tensor
    labeled: torch.Tensor      # rows with a label
    unlabeled: torch.Tensor    # rows without one
    class_weights: torch.Tensor
    label_counts: np.ndarray
    styles: torch.Tensor | None = None  # [K, 2, D] speaker-style bank (augment.style_bank)


@dataclass(frozen=True)
class Preparation:
    """What an objective did with the received model before the first step."""

    state: LocalState
    taken_rows: np.ndarray = field(default_factory=lambda: NO_ROWS)    # rows newly pseudo-labeled (MvPL's pool)
    taken_labels: np.ndarray = field(default_factory=lambda: NO_ROWS)
    candidates: int = 0
    pass_tau: int = 0
    pass_kappa: int = 0


@dataclass(frozen=True)
class Batch:
    labeled: torch.Tensor     # rows with a true label
    unlabeled: torch.Tensor   # rows without one (MvPL: pool positions; FixMatch: rows of x_train)


@dataclass(frozen=True)
class StepOutcome:
    loss: StepLoss
    rows: torch.Tensor | None = None      # unlabeled rows this step looked at
    labels: torch.Tensor | None = None    # the (pseudo-)label each of them got
    used: torch.Tensor | None = None      # which of them trained (FixMatch: passed the threshold); None = all
    candidates: int = 0                   # unlabeled predictions examined in this step


Summary = tuple[np.ndarray, np.ndarray, int, int]


class Objective(Protocol):
    keeps_pool: ClassVar[bool]   # pseudo-labels are taken in `prepare` and kept across participations

    def prepare(self, model: EmotionMLP, state: LocalState, gen: torch.Generator) -> Preparation: ...
    def batches(self, gen: torch.Generator) -> Iterator[Batch]: ...
    def loss(self, model: EmotionMLP, batch: Batch, gen: torch.Generator) -> StepOutcome: ...
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
        return NO_ROWS, NO_ROWS, 0, 0
    rows = torch.cat([o.rows for o in looked]).cpu().numpy()  # type: ignore[misc]
    labels = torch.cat([o.labels for o in looked]).cpu().numpy()  # type: ignore[misc]
    used = torch.cat([o.used if o.used is not None else torch.ones_like(o.rows, dtype=torch.bool)  # type: ignore[arg-type]
                      for o in looked]).cpu().numpy()
    distinct, label = _distinct_last(rows[used], labels[used])
    return distinct, label, sum(o.candidates for o in looked), int(used.sum())


def weak_labeled_loss(model: EmotionMLP, t: ClientTensors, rows: torch.Tensor, semi: SemiConfig,
                      gen: torch.Generator) -> StepLoss:
    """CB-CE on a weak view of the labeled rows of a step (zero when the step has none)."""
    if len(rows) == 0:
        return StepLoss.zero(t.x.device)
    weak = stochastic_feature_augmentation(t.x[rows], semi.weak_sigma1, semi.weak_sigma2, gen)
    return StepLoss.weighted_ce(model, weak, t.y[rows], t.class_weights, gen)


def strong_view(semi: SemiConfig, styles: torch.Tensor | None) -> StrongView:
    return StrongView(semi.strong_sigma1, semi.strong_sigma2, semi.strong_mixup, semi.strong_mask,
                      styles if semi.strong_style else None)


class Supervised:
    keeps_pool: ClassVar[bool] = False

    def __init__(self, t: ClientTensors, batch_size: int) -> None:
        self.t, self.batch_size = t, batch_size

    def prepare(self, model: EmotionMLP, state: LocalState, gen: torch.Generator) -> Preparation:
        return Preparation(state)

    def batches(self, gen: torch.Generator) -> Iterator[Batch]:
        for pick in one_pass(self.t.labeled, self.batch_size, gen):
            yield Batch(pick, self.t.labeled[:0])

    def loss(self, model: EmotionMLP, batch: Batch, gen: torch.Generator) -> StepOutcome:
        t = self.t
        return StepOutcome(StepLoss.weighted_ce(model, t.x[batch.labeled], t.y[batch.labeled], t.class_weights, gen))

    def summarise(self, outcomes: Sequence[StepOutcome]) -> Summary:
        return _summarise(outcomes)


class LabeledOnly(Supervised):
    def __init__(self, config: RunConfig, t: ClientTensors) -> None:
        super().__init__(t, config.train.batch_size)
        self.semi = config.semi

    def loss(self, model: EmotionMLP, batch: Batch, gen: torch.Generator) -> StepOutcome:
        return StepOutcome(weak_labeled_loss(model, self.t, batch.labeled, self.semi, gen))


class MultiviewPseudoLabels:
    keeps_pool: ClassVar[bool] = True

    def __init__(self, config: RunConfig, t: ClientTensors, threshold: float) -> None:
        self.semi, self.batch_size, self.t, self.threshold = config.semi, config.train.batch_size, t, threshold
        self.strong = strong_view(config.semi, t.styles)
        self.pool_rows = self.pool_labels = t.labeled[:0]

    def prepare(self, model: EmotionMLP, state: LocalState, gen: torch.Generator) -> Preparation:
        """MvPL with the received model, from the second participation on as the paper; a client without
        labels starts at its first, since the global model is all it has to learn from."""
        prepared = self._grow_pool(model, state, gen)
        device = self.t.x.device
        self.pool_rows = torch.from_numpy(prepared.state.pseudo_index).to(device)
        self.pool_labels = torch.from_numpy(prepared.state.pseudo_label).to(device)
        return prepared

    def _grow_pool(self, model: EmotionMLP, state: LocalState, gen: torch.Generator) -> Preparation:
        semi, t = self.semi, self.t
        unlabeled = t.unlabeled.cpu().numpy()
        pooled = np.zeros(len(t.y), bool)
        pooled[state.pseudo_index] = True
        candidates = unlabeled[~pooled[unlabeled]].astype(np.int64)
        too_early = state.participations < 1 and len(t.labeled) > 0
        if too_early or candidates.size == 0 or semi.max_per_class == 0:
            return Preparation(state)
        model.eval()
        with torch.no_grad():
            views = weak_views(t.x[torch.from_numpy(candidates).to(t.x.device)], semi.views, semi.weak_sigma1,
                               semi.weak_sigma2, gen)
            logits = model(views.reshape(-1, views.shape[-1])).reshape(*views.shape[:2], -1)
            probs = view_probabilities(logits, semi.temperature).cpu().numpy()
        model.train()
        chosen = select_pseudo_labels(probs, self.threshold, semi.uncertainty_max, semi.max_per_class)
        rows, labels = candidates[chosen.index].astype(np.int64), chosen.label.astype(np.int64)
        grown = replace(state, pseudo_index=np.concatenate([state.pseudo_index, rows]),
                        pseudo_label=np.concatenate([state.pseudo_label, labels]))
        return Preparation(grown, rows, labels, int(candidates.size), chosen.n_confident, chosen.n_eligible)

    def batches(self, gen: torch.Generator) -> Iterator[Batch]:
        positions = torch.arange(len(self.pool_rows), device=self.pool_rows.device)
        if len(self.t.labeled) == 0:  # no labels: the pool is the whole objective
            for pick in one_pass(positions, self.batch_size, gen):
                yield Batch(self.t.labeled[:0], pick)
            return
        pool = Cycler(positions, self.batch_size, gen)
        for pick in one_pass(self.t.labeled, self.batch_size, gen):
            yield Batch(pick, pool.next() if len(self.pool_rows) else self.t.labeled[:0])

    def loss(self, model: EmotionMLP, batch: Batch, gen: torch.Generator) -> StepOutcome:
        semi, t = self.semi, self.t
        loss = weak_labeled_loss(model, t, batch.labeled, semi, gen)
        if len(batch.unlabeled) == 0:
            return StepOutcome(loss)
        rows, targets = self.pool_rows[batch.unlabeled], self.pool_labels[batch.unlabeled]
        strong = self.strong(t.x[rows], gen)
        share = len(batch.unlabeled) / self.batch_size if len(batch.labeled) else 1.0
        loss = loss + StepLoss.weighted_ce(model, strong, targets, t.class_weights, gen).times(semi.pseudo_weight).times(share)
        return StepOutcome(loss, rows, targets)

    def summarise(self, outcomes: Sequence[StepOutcome]) -> Summary:
        rows, labels, _, _ = _summarise(outcomes)
        return rows, labels, 0, 0  # MvPL's candidates and passes are counted when the pool grows


class FixMatch:
    keeps_pool: ClassVar[bool] = False

    def __init__(self, config: RunConfig, t: ClientTensors) -> None:
        self.semi, self.batch_size, self.t = config.semi, config.train.batch_size, t
        self.strong = strong_view(config.semi, t.styles)
        self.alignment: torch.Tensor | None = None

    def prepare(self, model: EmotionMLP, state: LocalState, gen: torch.Generator) -> Preparation:
        """Distribution alignment: p <- p * prior / mean prediction, renormalised, with the prior of the client's
        own labels (its absent classes get none). A client without labels has no prior to align to: a uniform one
        would push its predictions towards the classes it lacks."""
        t = self.t
        if self.semi.distribution_alignment and t.label_counts.sum() > 0 and len(t.unlabeled):
            prior = torch.from_numpy(t.label_counts / t.label_counts.sum()).to(t.x.device, torch.float32)
            model.eval()
            with torch.no_grad():
                mean = torch.softmax(model(t.x[t.unlabeled]), dim=1).mean(dim=0).clamp_min(1e-6)
            model.train()
            self.alignment = prior / mean
        return Preparation(state)

    def _align(self, probs: torch.Tensor) -> torch.Tensor:
        if self.alignment is None:
            return probs
        aligned = probs * self.alignment
        return aligned / aligned.sum(dim=1, keepdim=True).clamp_min(1e-12)

    def batches(self, gen: torch.Generator) -> Iterator[Batch]:
        t, size = self.t, self.batch_size
        unlabeled_size = size * self.semi.unlabeled_ratio
        unlabeled = Cycler(t.unlabeled, unlabeled_size, gen) if len(t.unlabeled) else None
        if len(t.labeled) == 0:
            for _ in range(math.ceil(len(t.unlabeled) / unlabeled_size)):
                yield Batch(t.labeled[:0], unlabeled.next())  # type: ignore[union-attr]
            return
        for pick in one_pass(t.labeled, size, gen):
            yield Batch(pick, unlabeled.next() if unlabeled else t.unlabeled[:0])

    def loss(self, model: EmotionMLP, batch: Batch, gen: torch.Generator) -> StepOutcome:
        semi, t = self.semi, self.t
        loss = weak_labeled_loss(model, t, batch.labeled, semi, gen)
        if len(batch.unlabeled) == 0:
            return StepOutcome(loss)
        x = t.x[batch.unlabeled]
        with torch.no_grad():
            model.eval()
            weak = stochastic_feature_augmentation(x, semi.weak_sigma1, semi.weak_sigma2, gen)
            probs = self._align(torch.softmax(model(weak), dim=1))
            model.train()
        confidence, target = probs.max(dim=1)
        mask = confidence >= semi.fixmatch_threshold
        loss = loss + StepLoss.masked_mean_ce(model, self.strong(x, gen), target, mask, gen).times(semi.pseudo_weight)
        return StepOutcome(loss, batch.unlabeled, target, mask, len(batch.unlabeled))

    def summarise(self, outcomes: Sequence[StepOutcome]) -> Summary:
        return _summarise(outcomes)


def make_objective(config: RunConfig, tensors: ClientTensors, pseudo_threshold: float) -> Objective:
    if not config.semi.enabled:
        return Supervised(tensors, config.train.batch_size)
    if config.semi.method == "mvpl":
        return MultiviewPseudoLabels(config, tensors, pseudo_threshold)
    if config.semi.method == "fixmatch":
        return FixMatch(config, tensors)
    return LabeledOnly(config, tensors)
