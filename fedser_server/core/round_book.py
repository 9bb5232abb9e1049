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

from fedser_server.core.records import EvalTally, RoundTally
from fedser_server.core.reports import Evaluation, UpdateHeader
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
    dp_clip_norm: float = 0.0
    dp_noise_std: float = 0.0

    @classmethod
    def of(cls, kind: TaskKind, spec: TaskSpec, task_id: str, participation: int, deadline_unix_s: float) -> TaskAssignment:
        return cls(kind, round=spec.round, task_id=task_id, lr=spec.lr, local_epochs=spec.local_epochs,
                   pseudo_threshold=spec.pseudo_threshold, participation=participation, deadline_unix_s=deadline_unix_s,
                   dp_clip_norm=spec.dp_clip_norm, dp_noise_std=spec.dp_noise_std)


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

    def task_of(self, client_id: str, round_index: int, task_id: str, kind: TaskKind | None = None) -> TaskAssignment:
        """The open task (of `kind`, if given) this call answers, or the refusal that says why there
        is none. The one question the round asks of a report: "is this task open"; its sender and
        fields were checked at the edge."""
        if round_index != self.round:
            raise StaleRoundError(self._not_in_progress(round_index))
        task = self.tasks.get(client_id)
        other_phase = kind is not None and kind is not self.kind
        if task is None or not secrets.compare_digest(task.task_id.encode(), task_id.encode()):
            if other_phase:
                raise StaleRoundError(self._not_in_progress(round_index, kind))
            if task is None:
                raise NotParticipatingError(f"client '{client_id}' is not sampled in round {round_index}")
            raise StaleRoundError(f"task '{task_id[:64]}' is not the client's current task")
        if kind is not None and task.kind is not kind:
            raise NotParticipatingError(f"task '{task_id[:64]}' is a {task.kind.value} task, not a {kind.value} task")
        if client_id in self.reported:
            raise StaleRoundError(f"task '{task_id[:64]}' of round {round_index} was already answered: "
                                  "a task takes one answer")
        if not self.open:
            raise StaleRoundError(f"round {round_index} closed before this answer was accepted")
        return task

    def _not_in_progress(self, round_index: int, kind: TaskKind | None = None) -> str:
        now = f"{'training' if self.kind is TaskKind.TRAIN else 'evaluation'} of round {self.round} is in progress"
        if round_index > self.round:
            return f"round {round_index} has not started ({now})"
        if round_index == self.round:
            return f"the {'training' if kind is TaskKind.TRAIN else 'evaluation'} of round {round_index} is over ({now})"
        return f"round {round_index} is over ({now})"

    def accept_update(self, client_id: str, header: UpdateHeader, num_classes: int) -> None:
        self.task_of(client_id, header.round, header.task_id, TaskKind.TRAIN)
        self.tally.add_update(header.metrics, num_classes)
        self.reported.add(client_id)

    def accept_evaluation(self, client_id: str, evaluation: Evaluation) -> None:
        self.task_of(client_id, evaluation.round, evaluation.task_id, TaskKind.EVALUATE)
        self.evaluation.add(evaluation.confusion, evaluation.loss)
        self.reported.add(client_id)

    @property
    def complete(self) -> bool:
        return self.reported >= set(self.tasks)

    def silent(self) -> list[str]:
        return sorted(set(self.tasks) - self.reported)
