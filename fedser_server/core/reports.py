"""What a client reports about its work, checked once at the edge into typed values.

Every count and metric a client sends is range-checked here, before anything is handed on:
below this module a header cannot overflow an int64 tally or turn a round's mean loss into
inf (which `metrics.jsonl`, written with `allow_nan=False`, refuses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fedser_shared.checksum import Checksum
from fedser_shared.errors import InvalidUpdateError

MAX_COUNT = 10**9  # examples a client may declare per count: far above any device, far below overflow
MAX_LOSS = 1e6     # a cross-entropy this large is a diverged model or a lie; either way not averaged in


def check_count(what: str, value: int, minimum: int = 0) -> int:
    if not minimum <= value <= MAX_COUNT:
        raise InvalidUpdateError(f"{what} {value} is out of range ({minimum}..{MAX_COUNT})")
    return int(value)


def check_loss(what: str, value: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= MAX_LOSS):
        raise InvalidUpdateError(f"{what} {value!r} must be a finite number in 0..{MAX_LOSS:g}")
    return float(value)


def _per_class(what: str, values: Sequence[int], num_classes: int) -> tuple[int, ...]:
    if len(values) not in (0, num_classes):
        raise InvalidUpdateError(f"{what} has {len(values)} entries, the run has {num_classes} classes (or send none)")
    return tuple(check_count(f"{what} entry", v) for v in values)


@dataclass(frozen=True)
class UpdateHeader:
    """An update's header: which task it answers, how much it weighs, what training reported."""

    round: int
    task_id: str
    n_samples: int
    total_len: int
    loss: float = 0.0
    pseudo_taken_per_class: tuple[int, ...] = ()
    pseudo_correct_per_class: tuple[int, ...] = ()
    pseudo_with_truth: int = 0
    pseudo_candidates: int = 0
    pseudo_pass_tau: int = 0
    pseudo_pass_kappa: int = 0
    checksum: Checksum = Checksum.SHA256  # the algorithm of the digest that ends the blob

    @property
    def empty(self) -> bool:
        """A participation with nothing trained on (a label-free client before its first pseudo-label):
        acknowledged and counted, never aggregated."""
        return self.n_samples == 0

    @classmethod
    def checked(cls, *, round: int, task_id: str, n_samples: int, total_len: int, loss: float,
                pseudo_taken_per_class: Sequence[int], pseudo_correct_per_class: Sequence[int],
                pseudo_with_truth: int, num_classes: int, pseudo_candidates: int = 0, pseudo_pass_tau: int = 0,
                pseudo_pass_kappa: int = 0, checksum: Checksum = Checksum.SHA256) -> UpdateHeader:
        """The header, or InvalidUpdateError naming the first field out of range."""
        if total_len <= 0:
            raise InvalidUpdateError(f"announced blob length {total_len} must be positive")
        taken = _per_class("pseudo_taken_per_class", pseudo_taken_per_class, num_classes)
        correct = _per_class("pseudo_correct_per_class", pseudo_correct_per_class, num_classes)
        if correct and any(c > t for c, t in zip(correct, taken or (0,) * num_classes)):
            raise InvalidUpdateError("pseudo_correct_per_class counts more correct pseudo-labels than were taken")
        candidates = check_count("pseudo_candidates", pseudo_candidates)
        pass_tau = check_count("pseudo_pass_tau", pseudo_pass_tau)
        pass_kappa = check_count("pseudo_pass_kappa", pseudo_pass_kappa)
        if not pass_kappa <= pass_tau <= candidates:
            raise InvalidUpdateError(f"pseudo-label pass counts must satisfy kappa {pass_kappa} <= tau {pass_tau} "
                                     f"<= candidates {candidates}")
        return cls(round=round, task_id=task_id, n_samples=check_count("n_samples", n_samples),
                   total_len=total_len, loss=check_loss("loss", loss), pseudo_taken_per_class=taken,
                   pseudo_correct_per_class=correct,
                   pseudo_with_truth=check_count("pseudo_with_truth", pseudo_with_truth),
                   pseudo_candidates=candidates, pseudo_pass_tau=pass_tau, pseudo_pass_kappa=pass_kappa,
                   checksum=checksum)
