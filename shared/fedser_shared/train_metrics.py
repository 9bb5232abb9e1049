"""What one local training reports, as one checked value (client, server and in-process engine).

`TrainMetrics.checked` is the only place where a training report's numbers are range-checked:
the server builds one from the wire (`from_pb`) at its edge, and everything below (the round's
tally, `metrics.jsonl`) trusts it. Below this check a report cannot overflow an int64 tally or
turn a round's mean loss into inf or NaN (which `metrics.jsonl`, written with `allow_nan=False`,
refuses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fedser_shared.errors import InvalidUpdateError
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb

MAX_COUNT = 10**9        # examples per count: far above any device, far below an int64 overflow
MAX_LOSS = 1e6           # a cross-entropy this large is a diverged model or a lie; either way not averaged in
MAX_TRAIN_SECONDS = 1e7  # about 115 days of local training


def check_count(what: str, value: int, minimum: int = 0) -> int:
    if not minimum <= value <= MAX_COUNT:
        raise InvalidUpdateError(f"{what} {value} is out of range ({minimum}..{MAX_COUNT})")
    return int(value)


def check_real(what: str, value: float, maximum: float) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= maximum):
        raise InvalidUpdateError(f"{what} {value!r} must be a finite number in 0..{maximum:g}")
    return float(value)


def check_loss(what: str, value: float) -> float:
    return check_real(what, value, MAX_LOSS)


def _per_class(what: str, values: Sequence[int], num_classes: int) -> tuple[int, ...]:
    if len(values) not in (0, num_classes):
        raise InvalidUpdateError(f"{what} has {len(values)} entries, the run has {num_classes} classes (or send none)")
    return tuple(check_count(f"{what} entry", v) for v in values)


@dataclass(frozen=True)
class TrainMetrics:
    """One participation's weight (`n_samples`, the examples trained on) and what training reported."""

    n_samples: int
    loss: float = 0.0
    n_labeled: int = 0
    n_pseudo: int = 0
    local_steps: int = 0
    pseudo_taken_per_class: tuple[int, ...] = ()
    pseudo_correct_per_class: tuple[int, ...] = ()   # where a hidden true label exists
    pseudo_with_truth: int = 0
    train_seconds: float = 0.0
    pseudo_candidates: int = 0   # unlabeled predictions examined (MvPL: pool rows; FixMatch: rows x steps)
    pseudo_pass_tau: int = 0     # of those, how many reached the confidence threshold
    pseudo_pass_kappa: int = 0   # MvPL: how many also had view uncertainty <= kappa

    @property
    def empty(self) -> bool:
        """A participation with nothing trained on (a label-free client before its first
        pseudo-label): acknowledged and counted, never aggregated."""
        return self.n_samples == 0

    @classmethod
    def checked(cls, num_classes: int, *, n_samples: int, loss: float, n_labeled: int = 0, n_pseudo: int = 0,
                local_steps: int = 0, pseudo_taken_per_class: Sequence[int] = (),
                pseudo_correct_per_class: Sequence[int] = (), pseudo_with_truth: int = 0, train_seconds: float = 0.0,
                pseudo_candidates: int = 0, pseudo_pass_tau: int = 0, pseudo_pass_kappa: int = 0) -> TrainMetrics:
        """The metrics, or InvalidUpdateError naming the first field out of range."""
        taken = _per_class("pseudo_taken_per_class", pseudo_taken_per_class, num_classes)
        correct = _per_class("pseudo_correct_per_class", pseudo_correct_per_class, num_classes)
        if correct and any(c > t for c, t in zip(correct, taken or (0,) * num_classes, strict=True)):
            raise InvalidUpdateError("pseudo_correct_per_class counts more correct pseudo-labels than were taken")
        candidates = check_count("pseudo_candidates", pseudo_candidates)
        pass_tau = check_count("pseudo_pass_tau", pseudo_pass_tau)
        pass_kappa = check_count("pseudo_pass_kappa", pseudo_pass_kappa)
        if not pass_kappa <= pass_tau <= candidates:
            raise InvalidUpdateError(f"pseudo-label pass counts must satisfy kappa {pass_kappa} <= tau {pass_tau} "
                                     f"<= candidates {candidates}")
        return cls(n_samples=check_count("n_samples", n_samples), loss=check_loss("loss", loss),
                   n_labeled=check_count("n_labeled", n_labeled), n_pseudo=check_count("n_pseudo", n_pseudo),
                   local_steps=check_count("local_steps", local_steps), pseudo_taken_per_class=taken,
                   pseudo_correct_per_class=correct, pseudo_with_truth=check_count("pseudo_with_truth", pseudo_with_truth),
                   train_seconds=check_real("train_seconds", train_seconds, MAX_TRAIN_SECONDS),
                   pseudo_candidates=candidates, pseudo_pass_tau=pass_tau, pseudo_pass_kappa=pass_kappa)

    @classmethod
    def from_pb(cls, n_samples: int, message: pb.TrainMetrics, num_classes: int) -> TrainMetrics:
        """An update header's `n_samples` and `metrics`, checked (InvalidUpdateError otherwise)."""
        return cls.checked(num_classes, n_samples=n_samples, loss=message.loss, n_labeled=message.n_labeled,
                           n_pseudo=message.n_pseudo, local_steps=message.local_steps,
                           pseudo_taken_per_class=message.pseudo_taken_per_class,
                           pseudo_correct_per_class=message.pseudo_correct_per_class,
                           pseudo_with_truth=message.pseudo_with_truth, train_seconds=message.train_seconds,
                           pseudo_candidates=message.pseudo_candidates, pseudo_pass_tau=message.pseudo_pass_tau,
                           pseudo_pass_kappa=message.pseudo_pass_kappa)

    def to_pb(self) -> pb.TrainMetrics:
        """The header's `metrics` (`n_samples` travels beside it, in `UpdateHeader.n_samples`)."""
        return pb.TrainMetrics(loss=self.loss, n_labeled=self.n_labeled, n_pseudo=self.n_pseudo,
                               local_steps=self.local_steps, pseudo_taken_per_class=self.pseudo_taken_per_class,
                               pseudo_correct_per_class=self.pseudo_correct_per_class,
                               pseudo_with_truth=self.pseudo_with_truth, train_seconds=self.train_seconds,
                               pseudo_candidates=self.pseudo_candidates, pseudo_pass_tau=self.pseudo_pass_tau,
                               pseudo_pass_kappa=self.pseudo_pass_kappa)
