"""What clients see of the round engine (DESIGN §3): the phase in progress, the global state.

Thread-safe; transport-agnostic. The gRPC servicer calls the client-facing methods (sessions
are `Sessions`' job; the rules of who may answer which task are `RoundBook`'s); `run()` hands
the thread to a `RoundDriver`, which changes what clients see only through the driver-facing
methods. Aggregation is delegated to a `Strategy`, fed by an `Aggregator` thread; updates are
checked in full while they stream in (`IncomingUpdate`) and reach the strategy only after that,
so a bad update never touches the global state or the running sums.

The global state lives inside the blob that FetchModel serves (arrays are views into it), and
each round's new state is computed straight into the next blob: one copy of the model, not two.
A large model's blob and running sums live in files of the state dir (`ServedState`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping

import numpy as np

from fedser_server.core.norm_bound import NormBound
from fedser_server.core.records import RoundTally
from fedser_server.core.reports import Evaluation, UpdateHeader
from fedser_server.core.round_book import RoundBook, TaskAssignment, TaskKind
from fedser_server.core.strategy import FedAvg
from fedser_server.engine.aggregator import Aggregator
from fedser_server.engine.driver import RoundDriver
from fedser_server.engine.incoming import CheckedUpdate, IncomingUpdate
from fedser_server.engine.secure_round import SecureRound
from fedser_server.engine.served_state import FileBackedState, InMemoryState, ServedState
from fedser_server.engine.sessions import Joined, Sessions
from fedser_server.engine.stats import RunStats
from fedser_server.security.tokens import TokenStore
from fedser_server.state.registry import ClientRecord, Registry
from fedser_server.state.store import StateStore
from fedser_shared import codec
from fedser_shared.config import RunConfig
from fedser_shared.errors import (
    FedserError,
    ServerStoppingError,
    SessionExpiredError,
    StaleRoundError,
    StateError,
)
from fedser_shared.logging import get_logger
from fedser_shared.tensor_names import DELTA, WEIGHT

log = get_logger(__name__)

BLOB_SLACK_BYTES = 64 * 1024


class Coordinator:
    def __init__(
        self,
        config: RunConfig,
        strategy: FedAvg,
        initial_weights: Mapping[str, np.ndarray],
        store: StateStore,
        feature_dim: int,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        client_timeout_s: float = 120.0,
        heartbeat_interval_s: float | None = None,
        tokens: TokenStore | None = None,
        resume: bool = False,
    ) -> None:
        self.config = config
        self.strategy = strategy
        self.store = store
        self.feature_dim = feature_dim
        self._clock = self.clock = clock
        self._wall = self.wall_clock = wall_clock
        self.client_timeout_s = client_timeout_s
        # a few heartbeats fit in one timeout, so one lost packet does not kill a client
        self.heartbeat_interval_s = heartbeat_interval_s or min(10.0, client_timeout_s / 4)
        self.tokens = tokens
        lock = threading.RLock()
        self._cond = self.lock = threading.Condition(lock)
        # parked GetTask polls wait on their own condition: woken when tasks are posted or the run
        # ends, not by each of a round's N updates (N wake-ups of N parked polls per round)
        self._tasks_posted = threading.Condition(lock)
        self._task_listeners: list[Callable[[tuple[str, ...] | None], None]] = []  # polls parked elsewhere (an event loop)
        self._stop = threading.Event()
        self.done = threading.Event()
        self._book: RoundBook | None = None
        self.secure_round: SecureRound | None = None  # the secure round in progress (privacy.secure_aggregation)
        self.completed_round = 0
        self.state = strategy.initial_state(initial_weights)
        state_bytes = sum(v.nbytes for v in self.state.values())
        in_memory = state_bytes <= config.federation.state_in_memory_max_bytes
        # files hold two blobs and the float64 sums of an update as large as the state
        store.check_free_space(state_bytes, 0 if in_memory else 4 * state_bytes)
        self._expected_update = strategy.expected_update(self.state)
        self.max_update_bytes = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in self._expected_update.values()) + BLOB_SLACK_BYTES
        self._restore(resume)
        self._durable_round = self.completed_round  # the last round whose checkpoint is on disk
        self._driver: RoundDriver | None = None  # run() starts it
        self.registry = Registry(store.registry_path)
        self.sessions = Sessions(config, feature_dim, self.registry, tokens, self._cond, clock, wall_clock, client_timeout_s)
        layout = codec.BlobLayout(self.state)
        if in_memory:
            self.served: ServedState = InMemoryState(layout)
        else:
            self.served = files = FileBackedState(layout, store.scratch_dir)
            strategy.new_sum = files.sums()
        self.state, self._blob = self.served.serve(self.state)
        self.aggregator = Aggregator(strategy)
        fed = config.federation
        self._norm_bound = NormBound(fed.update_norm_max, fed.update_norm_relative or None, fed.update_norm_action)
        self._model_norm: tuple[int, float] = (-1, 0.0)  # (round, L2 norm of the global weights then)
        self.history: list[dict[str, object]] = self.store.read_metrics() if resume else []
        # read by the metrics endpoint at scrape time
        self.refusals: Counter[str] = Counter()  # refused updates, by reason
        self.request_refusals: Counter[tuple[str, str]] = Counter()  # other refused calls, by (rpc, reason)
        self._unrecorded_refusals: Counter[str] = Counter()  # since the last metrics line
        self._unrecorded_request_refusals: Counter[str] = Counter()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.finished = False  # every round ran: clients hear SHUTDOWN
        self._disk_full_since: float | None = None  # when parking an upload first failed for want of space
        self._failure: StateError | None = None     # what stopped the run from outside the round loop

    def _restore(self, resume: bool) -> None:
        """Continue from the checkpoint (resume) or insist on a state dir without a run in it."""
        checkpoint = self.store.load_checkpoint()
        if checkpoint is None:
            if resume:
                log.warning("resume_without_checkpoint", state_dir=str(self.store.dir))
            self.store.save_config(self.config.to_json())
            return
        state, round_index, train_record = checkpoint
        if not resume:
            raise StateError(f"state dir {self.store.dir} already holds a run at round {round_index}: "
                             "pass --resume to continue it, or use an empty state dir")
        expected = {n: (tuple(v.shape), v.dtype) for n, v in self.state.items()}
        found = {n: (tuple(v.shape), v.dtype) for n, v in state.items()}
        if expected != found:
            differing = sorted(set(expected) ^ set(found)) or sorted(n for n in expected if expected[n] != found[n])
            raise StateError(f"the checkpoint in {self.store.dir} does not fit this run's model/algorithm "
                             f"(tensors differ: {differing[:4]})")
        self.state, self.completed_round = state, round_index
        self.store.reconcile_metrics(round_index, train_record)
        log.info("resumed", round=round_index, state_dir=str(self.store.dir))

    # ---------------------------------------------------------------- client-facing
    def join(self, name: str, feature_name: str, feature_dim: int, label_counts: list[int],
             n_unlabeled: int, n_eval: int, client_id: str = "", token: str = "") -> Joined:
        return self.sessions.join(name, feature_name, feature_dim, label_counts, n_unlabeled, n_eval, client_id, token)

    def authenticate(self, client_id: str, session_token: str) -> ClientRecord:
        return self.sessions.authenticate(client_id, session_token)

    def heartbeat(self, client: ClientRecord) -> int:
        self.sessions.touch(client.client_id)
        return self.completed_round

    def leave(self, client: ClientRecord, reason: str) -> None:
        self.sessions.leave(client, reason)

    def next_task(self, client: ClientRecord, timeout_s: float) -> TaskAssignment:
        """Long-poll: block until this client has a task, the run ends, or the timeout passes."""
        deadline = self._clock() + timeout_s
        with self._cond:
            while True:
                self.sessions.touch(client.client_id)
                if self.finished:
                    client.shutdown_sent = True
                    self._cond.notify_all()
                    return TaskAssignment(TaskKind.SHUTDOWN, round=self.completed_round)
                if self._stop.is_set() or self.done.is_set():
                    raise ServerStoppingError("the server is stopping before the last round: retry later")
                if client.session_ended:
                    raise SessionExpiredError(f"session of client '{client.client_id}' expired ({client.session_ended}): join again")
                owed = self._book.owed(client.client_id) if self._book is not None else None
                if owed is not None:
                    return owed
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return TaskAssignment(TaskKind.WAIT, retry_after_s=0.0)
                self._tasks_posted.wait(timeout=min(remaining, 1.0))

    def add_task_listener(self, listener: Callable[[tuple[str, ...] | None], None]) -> None:
        """Call `listener` (from the posting thread, lock held: it must not block) whenever tasks
        are posted, sessions end or the run ends: when a parked poll's answer may have changed.
        It gets the clients concerned, or None when every client is."""
        with self._cond:
            self._task_listeners.append(listener)

    def _announce_tasks(self, client_ids: tuple[str, ...] | None = None) -> None:
        self._tasks_posted.notify_all()
        for listener in self._task_listeners:
            listener(client_ids)

    def model_blob(self, client: ClientRecord, round_index: int, task_id: str) -> codec.Blob:
        with self._cond:
            self._task_of(client, round_index, task_id)
            return self._blob

    def _task_of(self, client: ClientRecord, round_index: int, task_id: str, kind: TaskKind | None = None) -> TaskAssignment:
        book = self._book
        if book is None:
            raise StaleRoundError(f"round {round_index} is not in progress (no round is; {self.completed_round} completed)")
        return book.task_of(client.client_id, round_index, task_id, kind)

    def task_open(self, client: ClientRecord, round_index: int, task_id: str) -> bool:
        """Whether an update stream in progress may still be accepted (checked per chunk)."""
        with self._cond:
            try:
                self._task_of(client, round_index, task_id)
            except FedserError:
                return False
            return True

    def secure_round_for(self, client: ClientRecord, round_index: int, task_id: str) -> SecureRound:
        """The secure round in progress; it checks the client's task itself."""
        with self._cond:
            if self.secure_round is None or self.secure_round.round_index != round_index:
                raise StaleRoundError(f"no secure round {round_index} is open (current round {self.completed_round})")
            return self.secure_round

    def secure_round_joined(self, client: ClientRecord) -> None:
        """The client took part in the round's secure aggregation: its training task is answered
        (GetTask does not hand it out again; the stages go on through the SecAgg* calls)."""
        with self._cond:
            if self._book is not None:
                self._book.reported.add(client.client_id)

    def training_task(self, client: ClientRecord, round_index: int, task_id: str) -> TaskAssignment:
        """The open training task an update answers (its header was checked at the edge)."""
        with self._cond:
            return self._task_of(client, round_index, task_id, TaskKind.TRAIN)

    def incoming_update(self, header: UpdateHeader) -> IncomingUpdate:
        """Where an update whose header passed the edge's checks is received and checked."""
        fed = self.config.federation
        # a small update stays in memory: no file to create, write and read back per update
        spill_dir = self.store.incoming_dir if header.total_len > fed.inline_model_max_bytes else None
        return IncomingUpdate(header.total_len, self._expected_update, spill_dir, DELTA, header.checksum,
                              all_zero=header.empty)

    def submit_update(self, client: ClientRecord, header: UpdateHeader, update: CheckedUpdate) -> None:
        """Accept a received and checked update; it is folded into the round in the background
        (`Aggregator`) and the round does not close before it is.

        Owns the update's file until the hand-off to the aggregator, the last step, which cannot
        fail: everything that can refuse the update runs before it, so a refused update is
        discarded here and an accepted one is discarded by the aggregator once folded in."""
        handed_off = False
        try:
            assert update.norm is not None  # the receiver measures every update's delta.* tensors
            with self._cond:
                scale = self._norm_bound.scale(update.norm, self._global_weights_norm())
            if scale != 1.0:
                log.info("update_clipped", round=header.round, client_id=client.client_id, norm=update.norm, scale=scale)
            self.aggregator.wait_for_room()  # a backlog waits on the clients, not on this disk
            with self._cond:
                self._await_durable(header.round - 1)
                book = self._book
                if book is None:
                    self._task_of(client, header.round, header.task_id, TaskKind.TRAIN)  # raises: no round in progress
                assert book is not None
                book.accept_update(client.client_id, header, self.config.num_classes)
                client.participations += 1
                if not header.empty:  # an empty participation is counted above, never aggregated
                    self.aggregator.add(update, header.n_samples, scale)
                    self._norm_bound.accepted(update.norm, scale)
                    handed_off = True
                log.info("update_accepted", round=header.round, client_id=client.client_id, n_samples=header.n_samples,
                         n_reported=len(book.reported), n_sampled=len(book.tasks))
                self._cond.notify_all()
        finally:
            if not handed_off:
                update.discard()

    def _global_weights_norm(self) -> float:
        """The L2 norm of the global weights (w.*), once per round. Called with the lock held."""
        if self._model_norm[0] != self.completed_round:
            squares = sum(float(np.vdot(v, v)) for n, v in self.state.items() if n.startswith(WEIGHT))
            self._model_norm = (self.completed_round, float(np.sqrt(squares)))
        return self._model_norm[1]

    def _await_durable(self, round_index: int) -> None:
        """An acked client keeps its c_i⁺, so no update is accepted before the round it builds on is
        on disk: after a crash a client is at most one round ahead of the checkpoint, as without the
        background writer. Called with the lock held; the wait is the tail of one checkpoint write."""
        while self._durable_round < round_index:
            if self._stop.is_set() or self.done.is_set() or self._writes_failed():
                raise ServerStoppingError("the server is stopping before the last round: retry later")
            self._cond.wait(timeout=0.5)

    def _writes_failed(self) -> bool:
        return self._driver is not None and self._driver.writer.failed

    def count_refusal(self, rpc: str, reason: str, update: bool) -> None:
        """Count a refused call: updates by reason (`refusals`), other calls by (rpc, reason)
        (`request_refusals`). The next metrics line carries every refusal since the previous one,
        so refusals that arrive after their round closed are still on record."""
        with self._cond:
            if update:
                self.refusals[reason] += 1
                self._unrecorded_refusals[reason] += 1
            else:
                self.request_refusals[(rpc, reason)] += 1
                self._unrecorded_request_refusals[f"{rpc}.{reason}"] += 1

    def take_unrecorded_refusals(self, tally: RoundTally) -> None:
        with self._cond:
            tally.refused = dict(self._unrecorded_refusals)
            tally.refused_requests = dict(self._unrecorded_request_refusals)
            self._unrecorded_refusals.clear()
            self._unrecorded_request_refusals.clear()

    def stats(self) -> RunStats:
        """Everything status and Prometheus show, read at one instant under the lock."""
        with self._cond:
            clients = list(self.registry.clients.values())
            return RunStats(
                completed_round=self.completed_round, rounds_planned=self.config.federation.rounds,
                history=tuple(self.history), clients_registered=len(clients), clients_alive=len(self.alive_clients()),
                clients_left=sum(1 for c in clients if c.left), waiting_for_clients=self.waiting_for_clients,
                run_finished=self.done.is_set(), refusals=dict(self.refusals), request_refusals=dict(self.request_refusals),
                bytes_sent=self.bytes_sent, bytes_received=self.bytes_received,
                class_names=tuple(self.config.labels.class_names))

    def record_transfer(self, received: int = 0, sent: int = 0) -> None:
        with self._cond:
            self.bytes_received += received
            self.bytes_sent += sent

    def submit_evaluation(self, client: ClientRecord, evaluation: Evaluation) -> None:
        with self._cond:
            book = self._book
            if book is None:
                self._task_of(client, evaluation.round, evaluation.task_id, TaskKind.EVALUATE)  # raises
            assert book is not None
            book.accept_evaluation(client.client_id, evaluation)
            self._cond.notify_all()

    # ---------------------------------------------------------------- driver
    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            self._announce_tasks()

    def alive_clients(self) -> list[ClientRecord]:
        return self.sessions.alive()

    # ---------------------------------------------------------------- driver-facing (RoundDriver)
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def waiting_for_clients(self) -> bool:
        return self._driver is not None and self._driver.waiting_for_clients

    @property
    def rounds_given_up(self) -> int:
        """Times a round ran out of retries and the server went back to waiting for clients."""
        return self._driver.rounds_given_up if self._driver is not None else 0

    def run(self) -> None:
        """Drive the rounds to the last one (or until stopped) on this thread."""
        self._driver = RoundDriver(self)
        self._driver.run()
        if self._failure is not None:
            raise self._failure

    def disk_full(self) -> None:
        """An upload could not be parked: no disk space. Clients back off and send again; once the
        disk has stayed full for a whole round deadline the run stops, loudly, as a full disk at
        checkpoint time stops it: what is on disk stays intact for `--resume`."""
        with self._cond:
            now, patience = self.clock(), self.config.federation.round_timeout_s
            if self._disk_full_since is None:
                self._disk_full_since = now
            elif now - self._disk_full_since > patience and self._failure is None:
                self._failure = StateError(f"no disk space to park uploads in {self.store.incoming_dir} for more "
                                           f"than {patience:g} s (federation.round_timeout_s): free space, then resume")
                log.error("disk_full_stopping", directory=str(self.store.incoming_dir), seconds=round(now - self._disk_full_since, 1))
                self.stop()

    def disk_has_room(self) -> None:
        """An upload was parked on disk: the disk is not (or no longer) full."""
        with self._cond:
            self._disk_full_since = None

    def post(self, book: RoundBook) -> None:
        """Make `book` the phase in progress: its tasks go out to the parked polls."""
        with self._cond:
            self._book = book
            self._announce_tasks(tuple(book.tasks))

    def close_phase(self, book: RoundBook) -> None:
        with self._cond:
            book.open = False

    def install(self, state: dict[str, np.ndarray], blob: codec.Blob, round_index: int) -> None:
        """The round's new global state (views into `blob`, which FetchModel serves from now on)."""
        with self._cond:
            self.state, self._blob, self.completed_round = state, blob, round_index

    def mark_durable(self, round_index: int) -> None:
        with self._cond:
            self._durable_round = round_index
            self._cond.notify_all()

    def record_round(self, record: dict[str, object]) -> None:
        with self._cond:
            self.history.append(record)

    def end_sessions(self, client_ids: list[str], why: str) -> None:
        with self._cond:
            for client_id in client_ids:
                self.sessions.end(client_id, why)
            self._announce_tasks(tuple(client_ids))

    def end_run(self, finished: bool) -> None:
        """Every round ran (clients hear SHUTDOWN), or the run stopped early."""
        with self._cond:
            self.finished = finished
            self.done.set()
            self._book = None
            self._cond.notify_all()
            self._announce_tasks()

    def wait_for_shutdown_delivery(self, timeout_s: float) -> None:
        """After the last round, give alive clients a chance to hear SHUTDOWN before stopping."""
        if not self.finished:
            return
        deadline = self._clock() + timeout_s
        with self._cond:
            while self._clock() < deadline:
                pending = [c for c in self.alive_clients() if not c.shutdown_sent]
                if not pending:
                    return
                self._cond.wait(timeout=0.2)

    def close(self) -> None:
        self.aggregator.close()
        self.registry.close()

