"""One phase of a round (DESIGN §3): a training attempt or an evaluation, as the clients answer it.

A `Round` holds the phase's book of tasks (who was asked, who reported: `RoundBook`), its tally
and, for a training attempt, its `Collection`: where accepted updates go and what the new global
state is made of. `offer` says whether a task is still open, the one question a round asks of an
answer that the edge has already checked; `accept` records an answer; `close` makes the new
global state, the one place where it is computed.

Not thread-safe: the `RoundLoop` creates, publishes and closes a round, the `Coordinator` calls it
for the clients, both under the loop's lock (except `make_room` and `close`, which wait).
"""

from __future__ import annotations

from typing import Protocol

from fedser_server.core.records import EvalTally, RoundTally
from fedser_server.core.reports import Evaluation, UpdateHeader
from fedser_server.core.round_book import RoundBook, TaskAssignment, TaskKind
from fedser_server.core.secure_aggregation import fold_sum
from fedser_server.core.strategy import State
from fedser_server.engine.aggregator import Aggregator
from fedser_server.engine.incoming import CheckedUpdate
from fedser_server.engine.secure_round import SecureRound
from fedser_server.engine.served_state import ServedState
from fedser_server.engine.sums import WeightedSums
from fedser_shared import codec
from fedser_shared.dp import clip_scale
from fedser_shared.errors import NotParticipatingError
from fedser_shared.secagg import DecodedSum


class Collection(Protocol):
    """What a training round does with its accepted updates. Plaintext updates go into running
    weighted sums (`SummedUpdates`); a secure round's masked inputs are summed and unmasked by its
    stages, and only that sum reaches the running sums (`SecureSum`)."""

    @property
    def secure(self) -> SecureRound | None:
        """The secure round's stages, if the clients answer through them."""

    def make_room(self) -> None:
        """Block, with no lock held, while the updates accepted so far are a backlog."""

    def add(self, update: CheckedUpdate, n_samples: int, delta_scale: float) -> None:
        """Take an accepted update (and its file): it must not fail."""

    def new_state(self, served: ServedState) -> tuple[State, codec.Blob]:
        """Every accepted update folded in: the new global state, as the next served blob."""


class SummedUpdates:
    """Accepted updates folded into the round's `WeightedSums` by the `Aggregator`'s thread, in the
    order they were accepted, while the next ones stream in. With `clip_norm` (central DP) each
    update's model change is clipped to that L2 norm as it goes in."""

    def __init__(self, sums: WeightedSums, aggregator: Aggregator, clip_norm: float | None = None) -> None:
        self._sums, self._aggregator, self._clip_norm = sums, aggregator, clip_norm

    @property
    def secure(self) -> SecureRound | None:
        return None

    def make_room(self) -> None:
        self._aggregator.wait_for_room()  # a backlog waits on the clients, not on this disk

    def add(self, update: CheckedUpdate, n_samples: int, delta_scale: float) -> None:
        if self._clip_norm is not None:
            assert update.norm is not None  # the receiver measures every update's delta.* tensors
            delta_scale *= clip_scale(update.norm * delta_scale, self._clip_norm)
        self._aggregator.add(update, self._sums, n_samples, delta_scale)

    def new_state(self, served: ServedState) -> tuple[State, codec.Blob]:
        self._aggregator.drain()  # every accepted update is in the sums
        return served.next_round(self._sums)


class SecureSum:
    """A secure round's collection (privacy.secure_aggregation): clients answer through the stages of
    `secure` (the servicer's SecAgg* calls), never with an update; the running sums take only the
    unmasked sum of the survivors' inputs (`fold`)."""

    def __init__(self, sums: WeightedSums, secure: SecureRound) -> None:
        self._sums, self._secure = sums, secure

    @property
    def secure(self) -> SecureRound:
        return self._secure

    def make_room(self) -> None:
        pass

    def add(self, update: CheckedUpdate, n_samples: int, delta_scale: float) -> None:
        raise NotParticipatingError("a secure round takes masked inputs through the SecAgg calls, not an update")

    def fold(self, decoded: DecodedSum) -> bool:
        """The unmasked sum into the running sums; False when no client trained (nothing to fold)."""
        return fold_sum(self._sums, decoded)

    def new_state(self, served: ServedState) -> tuple[State, codec.Blob]:
        return served.next_round(self._sums)


class Round:
    def __init__(self, book: RoundBook, num_classes: int, collection: Collection | None = None, attempt: int = 0) -> None:
        if (collection is None) == (book.kind is TaskKind.TRAIN):
            raise ValueError("a training round has a collection, an evaluation has none")
        self.book, self.collection, self.attempt = book, collection, attempt
        self._num_classes = num_classes

    @property
    def index(self) -> int:
        return self.book.round

    @property
    def kind(self) -> TaskKind:
        return self.book.kind

    @property
    def tally(self) -> RoundTally:
        return self.book.tally

    @property
    def evaluation(self) -> EvalTally:
        return self.book.evaluation

    @property
    def complete(self) -> bool:
        """Every client asked has answered."""
        return self.book.complete

    @property
    def n_reported(self) -> int:
        return len(self.book.reported)

    @property
    def n_asked(self) -> int:
        return len(self.book.tasks)

    def silent(self) -> list[str]:
        return self.book.silent()

    def owed(self, client_id: str) -> TaskAssignment | None:
        """The task this client still has to answer, if any."""
        return self.book.owed(client_id)

    def offer(self, client_id: str, round_index: int, task_id: str, kind: TaskKind | None = None) -> TaskAssignment:
        """The open task (of `kind`, if given) an answer or a model fetch is for; a refusal saying why there is none."""
        return self.book.task_of(client_id, round_index, task_id, kind)

    @property
    def secure(self) -> SecureRound | None:
        """The secure round's stages, when this is a training round under secure aggregation."""
        return self.collection.secure if self.collection is not None else None

    def answered_securely(self, client_id: str) -> None:
        """The client took part in the secure stages: its training task is answered (not handed out again)."""
        self.book.reported.add(client_id)

    def make_room(self) -> None:
        if self.collection is not None:
            self.collection.make_room()

    def accept(self, client_id: str, header: UpdateHeader, update: CheckedUpdate | None, delta_scale: float = 1.0) -> None:
        """Record a training answer; a non-empty one's update goes to the collection, which owns it
        from here. An empty participation (nothing to train on yet) is counted, never aggregated."""
        if self.secure is not None:
            raise NotParticipatingError("a secure round takes masked inputs through the SecAgg calls, not an update")
        self.book.accept_update(client_id, header, self._num_classes)
        if update is not None:
            if self.collection is None:
                raise NotParticipatingError(f"task '{header.task_id}' is not a training task")
            self.collection.add(update, header.n_samples, delta_scale)

    def accept_evaluation(self, client_id: str, evaluation: Evaluation) -> None:
        self.book.accept_evaluation(client_id, evaluation)

    def stop_answers(self) -> None:
        """Answers from now on are refused as late."""
        self.book.open = False

    def close(self, served: ServedState) -> tuple[State, codec.Blob]:
        """The round's new global state, as the next blob to serve: the one place it is made. Call
        it once answers are stopped, without the lock: nothing reaches the collection any more."""
        if self.book.open or self.collection is None:
            raise RuntimeError("close() is for a training round whose answers are stopped")
        return self.collection.new_state(served)
