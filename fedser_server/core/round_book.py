"""The book of the phase in progress (a training attempt or an evaluation): pure, no I/O, no lock.

Which client holds which task, which ones reported, and what their reports add up to. The
coordinator keeps one book at a time and calls it under its lock; every rule about "may this
client answer this task now" lives here.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from fedser_server.core.records import EvalTally, RoundTally
from fedser_server.core.reports import UpdateHeader
from fedser_server.core.round_plan import TaskSpec
from fedser_shared.errors import NotParticipatingError, StaleRoundError


class TaskKind(Enum):
    WAIT = "wait"
    TRAIN = "train"
    EVALUATE = "evaluate"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True)
class TaskAssignment:
    """A task as the server hands it out (proto `Task`): the round's spec plus who and until when."""

    kind: TaskKind
    round: int = 0
    task_id: str = ""
    lr: float = 0.0
    local_epochs: int = 1
    pseudo_threshold: float = 0.0
    participation: int = 0
    deadline_unix_s: float = 0.0
    retry_after_s: float = 0.0

    @classmethod
    def of(cls, kind: TaskKind, spec: TaskSpec, task_id: str, participation: int, deadline_unix_s: float) -> TaskAssignment:
        return cls(kind, round=spec.round, task_id=task_id, lr=spec.lr, local_epochs=spec.local_epochs,
                   pseudo_threshold=spec.pseudo_threshold, participation=participation, deadline_unix_s=deadline_unix_s)


@dataclass
class RoundBook:
    kind: TaskKind
    round: int
    tasks: dict[str, TaskAssignment] = field(default_factory=dict)   # client_id -> task
    reported: set[str] = field(default_factory=set)
    tally: RoundTally = field(default_factory=RoundTally)
    evaluation: EvalTally = field(default_factory=EvalTally)
    open: bool = True

    @classmethod
    def post(cls, kind: TaskKind, spec: TaskSpec, participations: Mapping[str, int], deadline_unix_s: float,
             new_task_id: Callable[[], str]) -> RoundBook:
        """A task of `kind` for each client (client_id -> how often it was sampled before)."""
        book = cls(kind=kind, round=spec.round)
        for client_id, participation in participations.items():
            book.tasks[client_id] = TaskAssignment.of(kind, spec, new_task_id(), participation, deadline_unix_s)
        return book

    def owed(self, client_id: str) -> TaskAssignment | None:
        """The task this client still has to answer, if any."""
        if self.open and client_id in self.tasks and client_id not in self.reported:
            return self.tasks[client_id]
        return None

    def task_of(self, client_id: str, round_index: int, task_id: str) -> TaskAssignment:
        """The open task this call answers, or the refusal that says why there is none."""
        if not self.open or round_index != self.round:
            raise StaleRoundError(f"round {round_index} is not open (current round {self.round})")
        task = self.tasks.get(client_id)
        if task is None:
            raise NotParticipatingError(f"client '{client_id}' is not sampled in round {round_index}")
        if not secrets.compare_digest(task.task_id.encode(), task_id.encode()):
            raise StaleRoundError(f"task '{task_id[:64]}' is not the client's current task")
        if client_id in self.reported:
            raise StaleRoundError(f"client '{client_id}' already reported for round {round_index}")
        return task

    def training_task(self, client_id: str, round_index: int, task_id: str) -> TaskAssignment:
        task = self.task_of(client_id, round_index, task_id)
        if task.kind is not TaskKind.TRAIN:
            raise NotParticipatingError(f"task '{task_id}' is not a training task")
        return task

    def accept_update(self, client_id: str, header: UpdateHeader, num_classes: int) -> None:
        self.training_task(client_id, header.round, header.task_id)
        self.tally.add_update(header.n_samples, header.loss, header.pseudo_taken_per_class,
                              header.pseudo_correct_per_class, header.pseudo_with_truth, num_classes,
                              header.pseudo_candidates, header.pseudo_pass_tau, header.pseudo_pass_kappa)
        self.reported.add(client_id)

    def accept_evaluation(self, client_id: str, round_index: int, task_id: str, confusion: np.ndarray, loss: float) -> None:
        task = self.task_of(client_id, round_index, task_id)
        if task.kind is not TaskKind.EVALUATE:
            raise NotParticipatingError(f"task '{task_id}' is not an evaluation task")
        self.evaluation.add(confusion, loss)
        self.reported.add(client_id)

    @property
    def complete(self) -> bool:
        return self.reported >= set(self.tasks)

    def silent(self) -> list[str]:
        return sorted(set(self.tasks) - self.reported)
