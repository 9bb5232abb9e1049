"""Which rows keep their label in a simulation: a seeded share per client, or whole speakers.

The same functions serve `fedser-sim --label-rate` and `benchmarks/accuracy.py`, so a label rate
means one thing everywhere: the share of a client's training rows that keep their label, exactly
(to the nearest row), with no per-class floor that would lift a small client's real share.
"""

from __future__ import annotations

import numpy as np

from fedser_client.core.data import UNLABELED


def labeled_count(n_rows: int, rate: float) -> int:
    """Rows that keep their label at `rate`: the nearest whole number, ties to the larger."""
    return min(n_rows, int(np.floor(rate * n_rows + 0.5)))


def hide_labels(labels: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Keep `labeled_count(len(labels), rate)` labels, spread over the classes in proportion to
    their size (largest remainder, seeded ties); the rest become UNLABELED."""
    kept = np.full(len(labels), UNLABELED, dtype=np.int64)
    if rate >= 1.0:
        return labels.astype(np.int64).copy()
    budget = labeled_count(len(labels), rate)
    classes = np.unique(labels)
    sizes = np.array([(labels == c).sum() for c in classes])
    quota = rate * sizes
    counts = np.floor(quota).astype(np.int64)
    leftover = budget - int(counts.sum())
    if leftover > 0:
        remainder = quota - counts + rng.random(len(classes)) * 1e-9  # seeded tie-break
        counts[np.argsort(-remainder)[:leftover]] += 1
    for cls, n_keep in zip(classes, counts):
        members = rng.permutation(np.flatnonzero(labels == cls))
        kept[members[:n_keep]] = cls
    return kept


def labeled_speakers(speakers: list[str], k: int, rng: np.random.Generator) -> set[str]:
    """K speakers, drawn with the seed, that keep every label (all others keep none)."""
    if not 1 <= k <= len(speakers):
        raise ValueError(f"cannot keep labels on {k} of {len(speakers)} speakers")
    return {speakers[i] for i in rng.choice(len(speakers), size=k, replace=False)}
