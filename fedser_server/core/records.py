"""One `metrics.jsonl` line per round, built the same way by every engine."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fedser_server.core.schedule import local_lr, pseudo_label_threshold
from fedser_shared.config import RunConfig
from fedser_shared.metrics import per_class_recall, uar
from fedser_shared.train_metrics import TrainMetrics


@dataclass
class RoundTally:
    """What a training round collected from its accepted updates."""

    n_sampled: int = 0
    n_updates: int = 0
    n_empty: int = 0          # updates with n_samples = 0: the client had nothing to train on yet
    losses: list[tuple[float, int]] = field(default_factory=list)
    pseudo_taken: np.ndarray | None = None
    pseudo_correct: np.ndarray | None = None
    pseudo_with_truth: int = 0
    pseudo_candidates: int = 0
    pseudo_pass_tau: int = 0
    pseudo_pass_kappa: int = 0
    refused: dict[str, int] = field(default_factory=dict)            # refused updates, by reason
    refused_requests: dict[str, int] = field(default_factory=dict)   # other refused calls, "Rpc.reason"
    attempts: int = 1
    seconds: float = 0.0
    wait_seconds: float = 0.0  # waiting for enough clients before the round could start

    def add_update(self, metrics: TrainMetrics, num_classes: int) -> None:
        self.n_updates += 1
        self.n_empty += metrics.empty
        self.pseudo_candidates += metrics.pseudo_candidates
        self.pseudo_pass_tau += metrics.pseudo_pass_tau
        self.pseudo_pass_kappa += metrics.pseudo_pass_kappa
        if not metrics.empty:
            self.losses.append((metrics.loss, metrics.n_samples))
        taken, correct = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
        taken[: len(metrics.pseudo_taken_per_class)] = metrics.pseudo_taken_per_class
        correct[: len(metrics.pseudo_correct_per_class)] = metrics.pseudo_correct_per_class
        self.pseudo_taken = taken if self.pseudo_taken is None else self.pseudo_taken + taken
        self.pseudo_correct = correct if self.pseudo_correct is None else self.pseudo_correct + correct
        self.pseudo_with_truth += metrics.pseudo_with_truth


@dataclass
class EvalTally:
    confusion: np.ndarray | None = None
    losses: list[tuple[float, int]] = field(default_factory=list)
    n_clients: int = 0

    def add(self, matrix: np.ndarray, loss: float) -> None:
        self.confusion = matrix.astype(np.int64) if self.confusion is None else self.confusion + matrix
        if math.isfinite(loss):
            self.losses.append((loss, int(matrix.sum())))
        self.n_clients += 1


def weighted_mean(pairs: list[tuple[float, int]]) -> float | None:
    total = sum(n for _, n in pairs)
    return float(sum(v * n for v, n in pairs) / total) if total else None


def metrics_record(config: RunConfig, round_index: int, tally: RoundTally, evaluation: EvalTally | None, seconds: float) -> dict[str, object]:
    record: dict[str, object] = {
        "round": round_index,
        "n_sampled": tally.n_sampled,
        "n_updates": tally.n_updates,
        "train_loss": weighted_mean(tally.losses),
        "lr": local_lr(config, round_index - 1),
        "attempts": tally.attempts,
        "train_seconds": round(tally.seconds, 4),
    }
    if tally.refused:
        record["refused"] = dict(tally.refused)
    if tally.refused_requests:
        record["refused_requests"] = dict(tally.refused_requests)
    if config.semi.enabled:
        zeros = np.zeros(config.num_classes, np.int64)
        record["tau"] = pseudo_label_threshold(config, round_index - 1)
        record["pseudo_taken"] = (tally.pseudo_taken if tally.pseudo_taken is not None else zeros).tolist()
        record["pseudo_correct"] = (tally.pseudo_correct if tally.pseudo_correct is not None else zeros).tolist()
        record["pseudo_with_truth"] = tally.pseudo_with_truth
        record["method"] = config.semi.method
        record["pseudo_candidates"] = tally.pseudo_candidates
        record["pass_tau"] = tally.pseudo_pass_tau / tally.pseudo_candidates if tally.pseudo_candidates else None
        if config.semi.method == "mvpl":
            record["pass_kappa"] = tally.pseudo_pass_kappa / tally.pseudo_candidates if tally.pseudo_candidates else None
        record["n_empty_updates"] = tally.n_empty
    if evaluation is not None:
        record.update(evaluation_fields(evaluation))
    if tally.wait_seconds:
        record["wait_seconds"] = round(tally.wait_seconds, 4)
    record["seconds"] = round(seconds, 4)
    return record


def evaluation_fields(evaluation: EvalTally) -> dict[str, object]:
    """A metrics line's evaluation part (none without a confusion matrix)."""
    if evaluation.confusion is None:
        return {}
    score = uar(evaluation.confusion)
    return {
        "uar": None if math.isnan(score) else score,
        "per_class_recall": [None if np.isnan(r) else float(r) for r in per_class_recall(evaluation.confusion)],
        "eval_loss": weighted_mean(evaluation.losses),
        "n_eval_clients": evaluation.n_clients,
        "confusion": evaluation.confusion.tolist(),
    }


def is_eval_round(config: RunConfig, round_index: int) -> bool:
    return round_index % config.federation.eval_every == 0 or round_index == config.federation.rounds
