"""What a client sends about its work, as typed values checked once at the transport's edge
(`fedser_server.transport.edge`): below it nothing re-checks them.

The numbers' ranges live with `TrainMetrics` (fedser_shared.train_metrics); re-exported here
for the checks of join and evaluation counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedser_shared.checksum import Checksum
from fedser_shared.train_metrics import MAX_COUNT, MAX_LOSS, TrainMetrics, check_count, check_loss

__all__ = ["MAX_COUNT", "MAX_LOSS", "Evaluation", "UpdateHeader", "check_count", "check_loss"]


@dataclass(frozen=True)
class UpdateHeader:
    """An update's header: which task it answers, how its blob arrives, what training reported."""

    round: int
    task_id: str
    total_len: int       # positive, within the model-derived limit
    metrics: TrainMetrics
    checksum: Checksum = Checksum.SHA256  # the algorithm of the digest that ends the blob

    @property
    def n_samples(self) -> int:
        return self.metrics.n_samples

    @property
    def empty(self) -> bool:
        return self.metrics.empty


@dataclass(frozen=True)
class Evaluation:
    """A client's evaluation of a round's model: its confusion matrix (rows = true class) and mean loss."""

    round: int
    task_id: str
    confusion: np.ndarray  # int64, num_classes x num_classes, non-negative, at most the declared n_eval in all
    loss: float
