"""The round plan, shared by every engine: who is sampled, and with which task spec.

Pure: the same config, candidates, round and attempt give the same plan. The grpc coordinator
and the inprocess engine both call `plan_round`, so they cannot sample or schedule differently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedser_server.core.schedule import local_lr, pseudo_label_threshold, sample_clients, sample_size
from fedser_shared.config import RunConfig


@dataclass(frozen=True)
class TaskSpec:
    """The hyper-parameters of a round's local work (proto `TrainSpec` plus the round)."""

    round: int
    lr: float
    local_epochs: int
    pseudo_threshold: float
    dp_clip_norm: float = 0.0  # privacy.dp: the L2 bound the client clips its model change to (0: none)
    dp_noise_std: float = 0.0  # privacy.dp = distributed: the client's share of the round's noise (0: none)


@dataclass(frozen=True)
class RoundPlan:
    round: int
    attempt: int
    sampled: tuple[str, ...]  # client names, sorted
    spec: TaskSpec


def task_spec(config: RunConfig, round_index: int) -> TaskSpec:
    """Round `round_index` (from 1): eta_l and tau_t of its schedule, t = round_index - 1."""
    return TaskSpec(round=round_index, lr=local_lr(config, round_index - 1), local_epochs=config.train.local_epochs,
                    pseudo_threshold=pseudo_label_threshold(config, round_index - 1))


def plan_round(config: RunConfig, trainable: Sequence[str], round_index: int, attempt: int = 0) -> RoundPlan:
    """Sample from the names of the trainable, alive clients (a seeded draw, independent of their order)."""
    k = sample_size(config, len(trainable))
    sampled = sample_clients(list(trainable), k, config.federation.seed, round_index, attempt)
    return RoundPlan(round_index, attempt, tuple(sampled), task_spec(config, round_index))
