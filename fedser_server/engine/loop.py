"""The round loop (DESIGN §3): wait for clients, then for each round plan → publish → await →
close → checkpoint, evaluate when due, record; until the last round.

`RoundLoop` owns the run: its thread, the lock that its `Coordinator` front shares, the state
store, the client registry, the served state, the aggregator and the checkpoint writer. It
changes what clients see only by publishing into the front. Time comes from the injected
`clock` (round deadlines, waiting, client expiry), so tests drive it without sleeping.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from fedser_server.clock import WAKE_S, Clock
from fedser_server.core.records import evaluation_fields, is_eval_round, metrics_record
from fedser_server.core.round_book import RoundBook, TaskKind
from fedser_server.core.round_plan import TaskSpec, plan_round, task_spec
from fedser_server.core.schedule import is_trainable
from fedser_server.core.secure_aggregation import graph_seed, update_layout
from fedser_server.core.strategy import State, Strategy
from fedser_server.engine.aggregator import Aggregator
from fedser_server.engine.coordinator import Coordinator
from fedser_server.engine.privacy import PrivacyBudgetReached, RunPrivacy
from fedser_server.engine.round import Collection, Round, SecureSum, SummedUpdates
from fedser_server.engine.secure_round import SecureRound
from fedser_server.engine.served_state import FileBackedState, InMemoryState, ServedState
from fedser_server.engine.sessions import Sessions
from fedser_server.engine.sums import WeightedSums
from fedser_server.security.tokens import TokenStore
from fedser_server.state.registry import ClientRecord, Registry
from fedser_server.state.store import StateStore
from fedser_server.state.writer import OrderedWriter
from fedser_shared import codec
from fedser_shared.config import RunConfig
from fedser_shared.errors import SecAggError, StateError
from fedser_shared.logging import get_logger

log = get_logger(__name__)

RECOUNT_S = 0.2  # while waiting for clients, the alive ones are counted at most this often


class RoundLoop:
    def __init__(self, config: RunConfig, strategy: Strategy, store: StateStore, registry: Registry, served: ServedState,
                 front: Coordinator, clock: Clock = time.monotonic, wall_clock: Clock = time.time,
                 new_task_id: Callable[[], str] = lambda: uuid.uuid4().hex[:12]) -> None:
        self.config, self.strategy, self.store, self.registry, self.served = config, strategy, store, registry, served
        self.front = front
        self.lock = front.lock
        self._clock, self._wall, self._new_task_id = clock, wall_clock, new_task_id
        self.aggregator = Aggregator()
        self.writer = OrderedWriter()
        self.rounds_given_up = 0  # times a round ran out of retries and the server went back to waiting
        self.privacy = RunPrivacy(config, store, strategy, front.history)
        self.stop_reason: str | None = None  # why the run ended before its last round (a privacy budget)

    @classmethod
    def open(cls, config: RunConfig, strategy: Strategy, initial_weights: Mapping[str, np.ndarray], store: StateStore,
             feature_dim: int, *, clock: Clock = time.monotonic, wall_clock: Clock = time.time,
             tokens: TokenStore | None = None, resume: bool = False) -> RoundLoop:
        """Start from the state dir: a new run, or the checkpoint of one (`resume`)."""
        state = strategy.initial_state(initial_weights)
        state_bytes = sum(v.nbytes for v in state.values())
        in_memory = state_bytes <= config.federation.state_in_memory_max_bytes
        # files hold two blobs and the float64 sums of an update as large as the state
        store.check_free_space(state_bytes, 0 if in_memory else 4 * state_bytes)
        state, completed_round = _restore(config, store, state, resume)
        layout = codec.BlobLayout(state)
        served: ServedState = InMemoryState(layout) if in_memory else FileBackedState(layout, store.scratch_dir)
        state, blob = served.serve(state)
        registry = Registry(store.registry_path)
        lock = threading.Condition(threading.RLock())
        sessions = Sessions(config, feature_dim, registry, tokens, lock, clock, wall_clock)
        front = Coordinator(config, lock, sessions, state, blob, completed_round, strategy.expected_update(state),
                            store.incoming_dir, store.read_metrics() if resume else [], clock, served.read_done)
        return cls(config, strategy, store, registry, served, front, clock, wall_clock)

    # ---------------------------------------------------------------- the run
    def run(self) -> None:
        """Drive the rounds to the last one (or until stopped) on this thread; raises what stopped the
        run early (a checkpoint that could not be written, a disk too full to take uploads)."""
        self._rounds()
        if self.front.failure is not None:
            raise self.front.failure

    def _rounds(self) -> None:
        fed, front = self.config.federation, self.front
        finished = False
        try:
            if not self._evaluate_resumed_round():
                return
            self.store.write_stop_reason(None)  # a resumed run is no longer stopped
            for round_index in range(front.completed_round + 1, fed.rounds + 1):
                if not self._round(round_index):
                    self.writer.flush()  # raises what stopped the writer, if that is what ended the rounds
                    return
            self.writer.flush()  # clients hear SHUTDOWN only once the last round is on disk
            finished = True
        except PrivacyBudgetReached as stop:  # a clean end: what is done is on disk, clients hear SHUTDOWN
            self.writer.flush()
            self.stop_reason = str(stop)
            self.privacy.stopped(self.stop_reason)
            log.warning("run_stopped", reason=self.stop_reason, completed_round=front.completed_round)
            finished = True
        finally:
            self.writer.close()  # what is queued reaches the disk even when the run is stopped
            front.end_run(finished)

    def _round(self, round_index: int) -> bool:
        """One round: its training, then its checkpoint, its evaluation when one is due and its
        metrics line. False when the run stopped first."""
        started = self._clock()
        closed = self._train(round_index)
        if closed is None:
            return False
        started += closed.tally.wait_seconds  # a round's duration is its own work, not the wait for clients
        privacy = self.privacy.release()
        train_record = metrics_record(self.config, round_index, closed.tally, None, self._clock() - started)
        train_record.update(privacy)
        self._checkpoint(round_index, train_record)
        evaluation = self._evaluate(round_index) if is_eval_round(self.config, round_index) else None
        if self.stopping:  # its line waits for the evaluation: on resume, from the checkpoint's record
            return False
        self.front.take_unrecorded_refusals(closed.tally)
        record = metrics_record(self.config, round_index, closed.tally,
                                evaluation.evaluation if evaluation else None, self._clock() - started)
        record.update(privacy)
        self._record(record)
        return True

    def _train(self, round_index: int) -> Round | None:
        """One round's training, attempt after attempt until one gets enough updates: wait for
        clients, plan → publish → await → close. The closed round (its tally says how long it
        waited for clients); None when the run stopped."""
        fed = self.config.federation
        attempt, waited_s = 0, 0.0
        while not self.stopping:
            needed = fed.clients_to_start if round_index == 1 and attempt == 0 else fed.min_clients
            waited = self._wait_for_clients(needed)
            if waited is None:
                return None
            waited_s += waited
            current = self._plan(round_index, attempt)
            published = self._clock()
            self.front.publish(current)
            n_updates = self._await_updates(current)
            if self.stopping:
                return None
            if n_updates == current.n_asked or n_updates >= fed.updates_needed:
                self._close(current)
                current.tally.seconds, current.tally.wait_seconds = self._clock() - published, waited_s
                return current
            attempt = self._retry(current, attempt)
        return None

    def _plan(self, round_index: int, attempt: int) -> Round:
        """Sample the round's clients and give each a training task; the round's sums start from the global state."""
        with self.lock:
            candidates = self._trainable(self.front.alive_clients())
            by_name = {x.name: x for x in candidates}
            plan = plan_round(self.config, list(by_name), round_index, attempt)
            n_registered = len(self._trainable(self.registry.clients.values()))
        sampled = [by_name[n] for n in plan.sampled]
        self.privacy.plan(round_index, len(sampled), len(candidates))  # stops the run when over its budget
        sums = WeightedSums(self.strategy, self.front.state, n_registered, self.served.sums())
        log.info("round_started", round=round_index, attempt=attempt, n_sampled=len(sampled), n_alive=len(candidates))
        book = self._book(TaskKind.TRAIN, round_index, sampled, self.config.federation.round_timeout_s,
                          self.privacy.task_spec(plan.spec, len(sampled)))
        collection: Collection = SummedUpdates(sums, self.aggregator, self.privacy.server_clip_norm)
        privacy = self.config.privacy
        if privacy.secure:
            layout = update_layout(self.strategy, self.front.state, privacy, len(book.tasks))
            secure = SecureRound(privacy, layout, round_index, {cid: t.task_id for cid, t in book.tasks.items()},
                                 graph_seed(self.config.federation.seed, round_index, str(attempt)))
            collection = SecureSum(sums, secure)
        return Round(book, self.config.num_classes, collection, attempt)

    def _await_updates(self, current: Round) -> int:
        """A training round's answers (through its secure stages under secure aggregation) until
        all are in or its deadline passed: how many updates it has."""
        if current.secure is not None:
            return self._await_secure(current, current.secure)
        self._await(current, self.config.federation.round_timeout_s)
        return current.n_reported

    def _await(self, current: Round, timeout_s: float) -> None:
        """Until every asked client answered, the deadline passed or the run stops; then answers stop."""
        deadline = self._clock() + timeout_s
        with self.lock:
            while not self.stopping and not current.complete:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    log.warning("phase_deadline", round=current.index, phase=current.kind.value,
                                reported=current.n_reported, expected=current.n_asked)
                    break
                self.lock.wait(timeout=min(remaining, WAKE_S))
            current.stop_answers()
            self.lock.notify_all()  # uploads still streaming for it are cut off now

    def _await_secure(self, current: Round, secure: SecureRound) -> int:
        """A secure round's stages (docs/privacy.md): the clients' masked inputs summed, unmasked and
        folded into the round's sums as one sum. The number of updates in it; 0 when it could not be
        unmasked (the round is retried, the global state untouched)."""
        privacy = self.config.privacy
        self.front.publish_secure(secure)
        try:
            decoded = secure.drive(self._clock, self._clock() + self.config.federation.round_timeout_s,
                                   privacy.secagg_stage_timeout_s, lambda: self.stopping, self.privacy.sum_within_bounds)
        except SecAggError as error:
            self.front.count_refusal("SecureRound", error.reason, update=False)
            log.warning("secagg_round_refused", round=current.index, attempt=current.attempt, reason=error.reason, detail=str(error))
            return 0
        finally:
            self.front.publish_secure(None)
            with self.lock:
                current.stop_answers()
        if decoded is None:
            return 0
        assert isinstance(current.collection, SecureSum)
        current.collection.fold(decoded)  # a round of empty participations only leaves the state as it is
        current.tally.n_updates = len(secure.survivors)
        current.tally.n_empty = len(secure.survivors) - decoded.n_trained
        return len(secure.survivors)

    def _close(self, current: Round) -> None:
        """The round's new state, made without the lock (clients keep authenticating), swapped in in O(1)."""
        state, blob = current.close(self.served)
        self.front.install(state, blob, current.index)
        current.tally.n_sampled, current.tally.attempts = current.n_asked, current.attempt + 1

    def _retry(self, current: Round, attempt: int) -> int:
        """The attempt after a failed one; after `max_round_retries`, the silent clients' sessions end
        and the count restarts: they count again only once they join anew, so the server waits."""
        fed = self.config.federation
        attempt += 1
        log.warning("round_retry", round=current.index, attempt=attempt, n_updates=current.n_reported, needed=fed.updates_needed)
        if attempt <= fed.max_round_retries:
            return attempt
        silent = current.silent()
        log.error("round_failed_waiting_for_clients", round=current.index, attempts=attempt, silent_clients=silent)
        self.rounds_given_up += 1
        self.front.end_sessions(silent, f"did not answer round {current.index}")
        return 0

    def _evaluate(self, round_index: int) -> Round | None:
        clients = [x for x in self.front.alive_clients() if x.n_eval > 0]
        if not clients:
            return None
        timeout_s = self.config.federation.eval_timeout_s
        current = Round(self._book(TaskKind.EVALUATE, round_index, clients, timeout_s), self.config.num_classes)
        self.front.publish(current)
        self._await(current, timeout_s)
        return current

    def _evaluate_resumed_round(self) -> bool:
        """A run stopped after its checkpoint but before that round's evaluation was recorded:
        evaluate the checkpoint's round now, once clients are back (False: stopped first)."""
        completed = self.front.completed_round
        history = self.front.history
        if not completed or not is_eval_round(self.config, completed):
            return True
        last = history[-1] if history else {}
        if last.get("round") != completed or not last.get("resumed") or "n_eval_clients" in last:
            return True  # its line was written whole, or restored and evaluated since
        if self._wait_for_clients(self.config.federation.min_clients, trainable_only=False) is None:
            return False
        evaluation = self._evaluate(completed)
        if self.stopping:
            return False
        record = dict(last)  # still "resumed": its training part is the checkpoint's record
        if evaluation is not None:
            record.update(evaluation_fields(evaluation.evaluation))
        log.info("resumed_round_evaluated", round=completed, evaluated=evaluation is not None)
        # the round's line without its evaluation is replaced: the other lines are rewritten as they are
        self.writer.submit(functools.partial(self.store.reconcile_metrics, completed - 1, None))
        self._record(record)
        return True

    def _record(self, record: dict[str, object]) -> None:
        """The round's metrics line, written after its checkpoint."""
        self.writer.submit(functools.partial(self.store.append_metrics, record))
        self.front.record_round(record)
        log.info("round_finished", **{k: v for k, v in record.items() if k not in ("confusion", "per_class_recall")})

    def _checkpoint(self, round_index: int, train_record: dict[str, object]) -> None:
        """Queue the round's checkpoint right after its close: the writer puts it on disk while the
        next round's tasks go out, and before anything queued later (that round's metrics line)."""
        save_checkpoint = self.served.checkpoint_of(self.front.state)
        with self.lock:
            # every client: the reported ones' participations, everyone's last contact
            clients = list(self.registry.clients.values())

        def write() -> None:
            try:
                save_checkpoint(self.store, round_index, train_record)
                # participations cannot move on meanwhile: no update of the next round is accepted before this returns
                self.registry.save_many(clients)  # the registry has its own lock
            except BaseException:
                self.front.writes_failed()
                raise
            self.front.mark_durable(round_index)

        self.writer.submit(write)

    # ---------------------------------------------------------------- helpers
    @property
    def stopping(self) -> bool:
        return self.front.stopping or self.writer.failed

    def stop(self) -> None:
        self.front.stop()

    @property
    def waiting_for_clients(self) -> bool:
        return self.front.waiting_for_clients

    def _book(self, kind: TaskKind, round_index: int, clients: list[ClientRecord], timeout_s: float,
              spec: TaskSpec | None = None) -> RoundBook:
        return RoundBook.post(kind, spec or task_spec(self.config, round_index), {x.client_id: x.participations for x in clients},
                              self._wall() + timeout_s, self._new_task_id)

    def _trainable(self, clients: Iterable[ClientRecord]) -> list[ClientRecord]:
        return [x for x in clients if is_trainable(self.config, x.n_labeled, x.n_unlabeled)]

    def _wait_for_clients(self, minimum: int, trainable_only: bool = True) -> float | None:
        """Block until `minimum` (trainable) clients are alive: the seconds it took (on the run's
        clock; a round reports them apart from its duration), None when the run stopped."""
        announced = False
        began = self._clock()

        def counted() -> int:
            alive = self.front.alive_clients()
            return len(self._trainable(alive) if trainable_only else alive)

        with self.lock:
            while not self.stopping:
                counting = time.monotonic()  # real time: the throttle is about CPU, not the run's clock
                enough = counted() >= minimum
                checked = time.monotonic()
                # the next count no sooner than RECOUNT_S, nor than 10x this count's cost: counting
                # holds the lock that every join needs at most a tenth of the time
                pause = max(RECOUNT_S, 10 * (checked - counting))
                if enough:
                    self.front.waiting_for_clients = False
                    return self._clock() - began
                if not announced:
                    log.info("waiting_for_clients", needed=minimum, alive=len(self.front.alive_clients()))
                    announced, self.front.waiting_for_clients = True, True
                # every join wakes this wait, and a count costs O(joined): 10,000 joins at once were
                # 10,000 counts of up to 10,000 clients, under the lock the joins need
                woken = False
                while not self.stopping and (left := pause - (time.monotonic() - checked)) > 0:
                    woken |= self.lock.wait(timeout=left)
                if not woken:
                    self.lock.wait(timeout=WAKE_S)
        return None

    def close(self) -> None:
        self.aggregator.close()
        self.registry.close()


def _restore(config: RunConfig, store: StateStore, initial: State, resume: bool) -> tuple[State, int]:
    """The checkpoint's state and round (resume), or the initial state in a state dir without a run in it."""
    checkpoint = store.load_checkpoint()
    if checkpoint is None:
        if resume:
            log.warning("resume_without_checkpoint", state_dir=str(store.dir))
        store.save_config(config.to_json())
        return initial, 0
    state, round_index, train_record = checkpoint
    if not resume:
        raise StateError(f"state dir {store.dir} already holds a run at round {round_index}: "
                         "pass --resume to continue it, or use an empty state dir")
    expected = {n: (tuple(v.shape), v.dtype) for n, v in initial.items()}
    found = {n: (tuple(v.shape), v.dtype) for n, v in state.items()}
    if expected != found:
        differing = sorted(set(expected) ^ set(found)) or sorted(n for n in expected if expected[n] != found[n])
        raise StateError(f"the checkpoint in {store.dir} does not fit this run's model/algorithm "
                         f"(tensors differ: {differing[:4]})")
    store.reconcile_metrics(round_index, train_record)
    log.info("resumed", round=round_index, state_dir=str(store.dir))
    return state, round_index
