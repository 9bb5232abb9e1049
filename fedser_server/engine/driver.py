"""The round driver (DESIGN §3): wait for clients, sample, post tasks, close, aggregate, evaluate,
checkpoint, and again until the last round.

It owns the run's thread and its checkpoint writer; the `Coordinator` owns what clients see
(the book of the phase in progress, the global state and its blob) and is changed only through
its driver-facing methods (`post`, `close_phase`, `install`, `mark_durable`, `record_round`,
`end_sessions`, `end_run`), each under the coordinator's lock.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from fedser_server.core.records import is_eval_round, metrics_record
from fedser_server.core.round_book import RoundBook, TaskKind
from fedser_server.core.round_plan import plan_round, task_spec
from fedser_server.core.schedule import is_trainable
from fedser_server.core.secure_aggregation import fold_sum, graph_seed, update_layout
from fedser_server.engine.secure_round import SecureRound
from fedser_server.state.registry import ClientRecord
from fedser_server.state.writer import OrderedWriter
from fedser_shared.errors import SecAggError
from fedser_shared.logging import get_logger

if TYPE_CHECKING:
    from fedser_server.engine.coordinator import Coordinator

log = get_logger(__name__)

RECOUNT_S = 0.2  # while waiting for clients, the alive ones are counted at most this often


class RoundDriver:
    def __init__(self, coordinator: Coordinator) -> None:
        self._c = coordinator
        self.config = coordinator.config
        self._clock, self._wall = coordinator.clock, coordinator.wall_clock
        self.writer = OrderedWriter()
        self._waited_s = 0.0  # spent waiting for clients in the round in progress
        self.waiting_for_clients = False
        self.rounds_given_up = 0  # times a round ran out of retries and the server went back to waiting

    def run(self) -> None:
        c, fed = self._c, self.config.federation
        finished = False
        try:
            for round_index in range(c.completed_round + 1, fed.rounds + 1):
                started, self._waited_s = self._clock(), 0.0
                book = self._train_round(round_index)
                if book is None:
                    self.writer.flush()  # raises what stopped the writer, if that is what ended the rounds
                    return
                book.tally.wait_seconds = self._waited_s
                started += self._waited_s  # a round's duration is its own work, not the wait for clients
                train_record = metrics_record(self.config, round_index, book.tally, None, self._clock() - started)
                self._checkpoint(round_index, train_record)
                evaluation = self._evaluate(round_index) if is_eval_round(self.config, round_index) else None
                c.take_unrecorded_refusals(book.tally)
                record = metrics_record(self.config, round_index, book.tally,
                                        evaluation.evaluation if evaluation else None, self._clock() - started)
                self.writer.submit(functools.partial(c.store.append_metrics, record))  # after the checkpoint
                c.record_round(record)
                log.info("round_finished", **{k: v for k, v in record.items() if k not in ("confusion", "per_class_recall")})
            self.writer.flush()  # clients hear SHUTDOWN only once the last round is on disk
            finished = True
        finally:
            self.writer.close()  # what is queued reaches the disk even when the run is stopped
            c.end_run(finished)

    @property
    def stopping(self) -> bool:
        return self._c.stopping or self.writer.failed

    def _trainable(self, clients: Iterable[ClientRecord]) -> list[ClientRecord]:
        return [x for x in clients if is_trainable(self.config, x.n_labeled, x.n_unlabeled)]

    def _wait_for_clients(self, minimum: int) -> bool:
        """Block until `minimum` trainable clients are alive (False when stopped). The time spent
        waiting is added to `_waited_s`: it is reported apart from the round's duration."""
        c = self._c
        announced = False
        began = self._clock()
        with c.lock:
            while not c.stopping:
                counting = time.monotonic()  # real time: the throttle is about CPU, not the run's clock
                enough = len(self._trainable(c.alive_clients())) >= minimum
                checked = time.monotonic()
                # the next count no sooner than RECOUNT_S, nor than 10x this count's cost: counting
                # holds the lock that every join needs at most a tenth of the time
                pause = max(RECOUNT_S, 10 * (checked - counting))
                if enough:
                    self.waiting_for_clients = False
                    self._waited_s += self._clock() - began
                    return True
                if not announced:
                    log.info("waiting_for_clients", needed=minimum, alive=len(c.alive_clients()))
                    announced, self.waiting_for_clients = True, True
                # every join wakes this wait, and a count costs O(joined): 10,000 joins at once were
                # 10,000 counts of up to 10,000 clients, under the lock the joins need
                woken = False
                while not c.stopping and (left := pause - (time.monotonic() - checked)) > 0:
                    woken |= c.lock.wait(timeout=left)
                if not woken:
                    c.lock.wait(timeout=0.5)
        return False

    def _open_phase(self, kind: TaskKind, round_index: int, clients: list[ClientRecord], timeout_s: float) -> RoundBook:
        book = RoundBook.post(kind, task_spec(self.config, round_index), {x.client_id: x.participations for x in clients},
                              self._wall() + timeout_s, lambda: uuid.uuid4().hex[:12])
        self._c.post(book)
        return book

    def _await_phase(self, book: RoundBook, timeout_s: float) -> None:
        c = self._c
        deadline = self._clock() + timeout_s
        with c.lock:
            while not self.stopping:
                if book.complete:
                    break
                remaining = deadline - self._clock()
                if remaining <= 0:
                    log.warning("phase_deadline", round=book.round, phase=book.kind.value,
                                reported=len(book.reported), expected=len(book.tasks))
                    break
                c.lock.wait(timeout=min(remaining, 0.5))
            c.close_phase(book)

    def _train_round(self, round_index: int) -> RoundBook | None:
        c, fed = self._c, self.config.federation
        attempt = 0
        while not c.stopping:
            needed = fed.clients_to_start if round_index == 1 and attempt == 0 else fed.min_clients
            if not self._wait_for_clients(needed):
                return None
            with c.lock:
                candidates = self._trainable(c.alive_clients())
                by_name = {x.name: x for x in candidates}
                plan = plan_round(self.config, list(by_name), round_index, attempt)
                c.strategy.begin_round(c.state, len(self._trainable(c.registry.clients.values())))
            sampled = [by_name[n] for n in plan.sampled]
            log.info("round_started", round=round_index, attempt=attempt, n_sampled=len(sampled), n_alive=len(candidates))
            book = self._open_phase(TaskKind.TRAIN, round_index, sampled, fed.round_timeout_s)
            started = self._clock()
            if self.config.privacy.secure:
                n_updates = self._await_secure(book, round_index, attempt)
            else:
                self._await_phase(book, fed.round_timeout_s)
                n_updates = len(book.reported)
            if self.stopping:
                return None
            c.aggregator.drain()  # every accepted update is in the sums
            book_seconds = self._clock() - started
            if n_updates == len(book.tasks) or n_updates >= fed.updates_needed:
                # the book is closed, so no update reaches the strategy any more: aggregate into the
                # next blob without the lock (clients keep authenticating), then swap in O(1)
                state, blob = c.served.next_round(c.strategy)
                c.install(state, blob, round_index)
                book.tally.n_sampled, book.tally.attempts, book.tally.seconds = len(book.tasks), attempt + 1, book_seconds
                return book
            attempt += 1
            log.warning("round_retry", round=round_index, attempt=attempt, n_updates=n_updates, needed=fed.updates_needed)
            if attempt > fed.max_round_retries:
                silent = book.silent()
                log.error("round_failed_waiting_for_clients", round=round_index, attempts=attempt, silent_clients=silent)
                attempt = 0
                self.rounds_given_up += 1
                # end the sessions of clients that never answered: they count again only
                # after they join anew, so the server waits instead of retrying in a loop
                c.end_sessions(silent, f"did not answer round {round_index}")
        return None

    def _await_secure(self, book: RoundBook, round_index: int, attempt: int) -> int:
        """A secure round's stages (docs/privacy.md): the clients' masked inputs summed, unmasked and
        folded into the strategy as one sum. The number of updates in it; 0 when it could not be
        unmasked (the round is retried, the strategy untouched)."""
        c, privacy = self._c, self.config.privacy
        layout = update_layout(c.strategy, c.state, privacy, len(book.tasks))
        secure = SecureRound(privacy, layout, round_index, {cid: t.task_id for cid, t in book.tasks.items()},
                             graph_seed(self.config.federation.seed, round_index, str(attempt)))
        with c.lock:
            c.secure_round = secure
        try:
            decoded = secure.drive(self._clock, self._clock() + self.config.federation.round_timeout_s,
                                   privacy.secagg_stage_timeout_s, lambda: self.stopping)
        except SecAggError as error:
            c.count_refusal("SecureRound", error.reason, update=False)
            log.warning("secagg_round_refused", round=round_index, attempt=attempt, reason=error.reason, detail=str(error))
            return 0
        finally:
            with c.lock:
                c.secure_round = None
            c.close_phase(book)
        if decoded is None:
            return 0
        fold_sum(c.strategy, decoded)  # a round of empty participations only leaves the state as it is
        book.tally.n_updates = len(secure.survivors)
        book.tally.n_empty = len(secure.survivors) - decoded.n_trained
        return len(secure.survivors)

    def _evaluate(self, round_index: int) -> RoundBook | None:
        clients = [x for x in self._c.alive_clients() if x.n_eval > 0]
        if not clients:
            return None
        book = self._open_phase(TaskKind.EVALUATE, round_index, clients, self.config.federation.eval_timeout_s)
        self._await_phase(book, self.config.federation.eval_timeout_s)
        return book

    def _checkpoint(self, round_index: int, train_record: dict[str, object]) -> None:
        """Queue the round's checkpoint right after aggregation: the writer puts it on disk while the
        next round's tasks go out, and before anything queued later (that round's metrics line)."""
        c = self._c
        save_checkpoint = c.served.checkpoint_of(c.state)
        with c.lock:
            # every client: the reported ones' participations, everyone's last contact
            clients = list(c.registry.clients.values())

        def write() -> None:
            save_checkpoint(c.store, round_index, train_record)
            # participations cannot move on meanwhile: no update of the next round is accepted before this returns
            c.registry.save_many(clients)  # the registry has its own lock
            c.mark_durable(round_index)

        self.writer.submit(write)
