"""A client's in-memory dataset: normalised features, labels, and its train/eval split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNLABELED = -1


@dataclass(frozen=True)
class ClientData:
    """Training rows have label UNLABELED when unlabeled; `hidden_labels` keeps the truth
    where a benchmark hid it (used only to count correct pseudo-labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    hidden_labels: np.ndarray = field(default=None)  # type: ignore[arg-type]
    # [K, 2, D] (scale, shift) mapping these z-scores to other speakers' normalisation (augment.style_bank);
    # only a simulation or benchmark that knows other speakers' statistics sets it
    style_bank: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.hidden_labels is None:
            object.__setattr__(self, "hidden_labels", np.full(len(self.y_train), UNLABELED, dtype=np.int64))

    @property
    def feature_dim(self) -> int:
        return int(self.x_train.shape[1] if self.x_train.size else self.x_eval.shape[1])

    @property
    def labeled_index(self) -> np.ndarray:
        return np.flatnonzero(self.y_train != UNLABELED)

    @property
    def unlabeled_index(self) -> np.ndarray:
        return np.flatnonzero(self.y_train == UNLABELED)

    def label_counts(self, num_classes: int) -> np.ndarray:
        labeled = self.y_train[self.y_train != UNLABELED]
        return np.bincount(labeled, minlength=num_classes).astype(np.int64)


def split_train_eval(labels: np.ndarray, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, eval): a seeded split, stratified over labeled classes.

    Unlabeled rows always train (they cannot be evaluated on)."""
    rng = np.random.default_rng(seed)
    train_parts, eval_parts = [np.flatnonzero(labels == UNLABELED)], []
    for cls in np.unique(labels[labels != UNLABELED]):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_eval = int(round(eval_fraction * len(members)))
        if n_eval >= len(members) and len(members) > 0:
            n_eval = len(members) - 1
        eval_parts.append(members[:n_eval])
        train_parts.append(members[n_eval:])
    train = np.sort(np.concatenate(train_parts)).astype(np.int64)
    evals = np.sort(np.concatenate(eval_parts)).astype(np.int64) if eval_parts else np.zeros(0, np.int64)
    return train, evals


def zscore(features: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """(x - mean) / (std + eps) with the statistics of these features (DESIGN §5 'client')."""
    if len(features) == 0:
        return features.astype(np.float32)
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    scores: np.ndarray = ((features - mean) / (std + eps)).astype(np.float32)
    return scores
