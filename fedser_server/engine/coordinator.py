"""What clients see of the round engine (DESIGN §3): the published round, the global state it
builds on, the sessions.

The client-facing front, thread-safe and transport-agnostic: the gRPC servicer calls it; the
`RoundLoop` publishes into it (`publish`, `install`, `mark_durable`, `record_round`,
`end_sessions`, `end_run`), under the loop's lock, which this front shares. Sessions are
`Sessions`' job; the rules of who may answer which task are the published `Round`'s. Updates are
checked in full while they stream in (`IncomingUpdate`) and reach the round only after that, so
a bad update never touches the global state or the running sums.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from fedser_server.clock import WAKE_S, Clock
from fedser_server.core.norm_bound import NormBound, l2_norm
from fedser_server.core.records import RoundTally
from fedser_server.core.reports import Evaluation, UpdateHeader
from fedser_server.core.round_book import TaskAssignment, TaskKind
from fedser_server.core.strategy import State, TensorSpec
from fedser_server.engine.incoming import CheckedUpdate, IncomingUpdate
from fedser_server.engine.round import Round
from fedser_server.engine.secure_round import SecureRound
from fedser_server.engine.sessions import Joined, Session, Sessions
from fedser_server.engine.stats import RunStats
from fedser_server.state.registry import ClientRecord
from fedser_shared import codec
from fedser_shared.config import RunConfig
from fedser_shared.errors import (
    FedserError,
    ServerStoppingError,
    StaleRoundError,
    StateError,
)
from fedser_shared.logging import get_logger
from fedser_shared.tensor_names import DELTA, WEIGHT

log = get_logger(__name__)

BLOB_SLACK_BYTES = 64 * 1024
WAIT = TaskAssignment(TaskKind.WAIT, retry_after_s=0.0)  # one answer shared by every waiting poll


class Coordinator:
    def __init__(self, config: RunConfig, lock: threading.Condition, sessions: Sessions, state: State, blob: codec.Blob,
                 completed_round: int, expected_update: Mapping[str, TensorSpec], incoming_dir: Path,
                 history: list[dict[str, object]] | None = None, clock: Clock = time.monotonic,
                 state_read_done: Callable[[str, int, int], None] | None = None) -> None:
        self.config = config
        self._cond = self.lock = lock
        self.clock = clock  # the run's clock: a full disk's patience, the update-header limit
        self.sessions = sessions
        self.registry = sessions.registry
        self.tokens = sessions.tokens  # None: open enrolment
        self.feature_dim = sessions.feature_dim
        self.client_timeout_s = config.server.client_timeout_s
        self.heartbeat_interval_s = config.server.heartbeat_s
        self._task_listeners: list[Callable[[tuple[str, ...] | None], None]] = []  # polls parked elsewhere (an event loop)
        self._stop = threading.Event()
        self._writes_failed = False
        self.done = threading.Event()
        self._round: Round | None = None  # the phase in progress, as published
        self._secure: SecureRound | None = None  # its secure stages while they run (privacy.secure_aggregation)
        self.state, self._blob, self.completed_round = state, blob, completed_round
        self._durable_round = completed_round  # the last round whose checkpoint is on disk
        self._expected_update = dict(expected_update)
        self.max_update_bytes = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in expected_update.values()) + BLOB_SLACK_BYTES
        self._incoming_dir = incoming_dir
        fed = config.federation
        self._norm_bound = NormBound(fed.update_norm_max, fed.update_norm_relative or None, fed.update_norm_action)
        self._model_norm: tuple[int, float] = (-1, 0.0)  # (round, L2 norm of the global weights then)
        # hears each block of the state once read (a state in a mapped file hands its pages back)
        self._state_read_done = state_read_done or (lambda name, start, count: None)
        self.history: list[dict[str, object]] = list(history or [])
        # read by the metrics endpoint at scrape time
        self.refusals: Counter[str] = Counter()  # refused updates, by reason
        self.request_refusals: Counter[tuple[str, str]] = Counter()  # other refused calls, by (rpc, reason)
        self._unrecorded_refusals: Counter[str] = Counter()  # since the last metrics line
        self._unrecorded_request_refusals: Counter[str] = Counter()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.waiting_for_clients = False  # published by the loop
        self.finished = False  # every round ran: clients hear SHUTDOWN
        self._disk_full_since: float | None = None  # when parking an upload first failed for want of space
        self.failure: StateError | None = None      # what stopped the run from the clients' side (the loop raises it)

    @property
    def published(self) -> Round | None:
        """The phase in progress (None between phases and after the run)."""
        return self._round

    # ---------------------------------------------------------------- sessions
    def join(self, name: str, feature_name: str, feature_dim: int, label_counts: list[int],
             n_unlabeled: int, n_eval: int, client_id: str = "", token: str = "") -> Joined:
        return self.sessions.join(name, feature_name, feature_dim, label_counts, n_unlabeled, n_eval, client_id, token)

    def authenticate(self, client_id: str, session_token: str) -> Session:
        return self.sessions.authenticate(client_id, session_token)

    def heartbeat(self, client: Session) -> int:
        self.sessions.touch(client)
        return self.completed_round

    def leave(self, client: Session, reason: str) -> None:
        self.sessions.leave(client, reason)

    def alive_clients(self) -> list[ClientRecord]:
        return self.sessions.alive()

    # ---------------------------------------------------------------- tasks
    def next_task(self, client: Session) -> TaskAssignment:
        """This client's answer to a poll now: SHUTDOWN, the task it owes, or WAIT. A poll is held
        elsewhere (`transport.long_poll`) until a task listener says the answer may have changed."""
        with self._cond:
            if self.finished:
                client.shutdown_sent = True
                self._cond.notify_all()
                return TaskAssignment(TaskKind.SHUTDOWN, round=self.completed_round)
            if self._stop.is_set() or self.done.is_set():
                raise ServerStoppingError("the server is stopping before the last round: retry later")
            self.sessions.touch_if_alive(client)
            owed = self._round.owed(client.client_id) if self._round is not None else None
            return owed if owed is not None else WAIT

    def add_task_listener(self, listener: Callable[[tuple[str, ...] | None], None]) -> None:
        """Call `listener` (from the posting thread, lock held: it must not block) whenever tasks
        are posted, sessions end or the run ends: when a parked poll's answer may have changed.
        It gets the clients concerned, or None when every client is."""
        with self._cond:
            self._task_listeners.append(listener)

    def _announce_tasks(self, client_ids: tuple[str, ...] | None = None) -> None:
        for listener in self._task_listeners:
            listener(client_ids)

    def _offer(self, client: Session, round_index: int, task_id: str, kind: TaskKind | None = None) -> TaskAssignment:
        current = self._round
        if current is None:
            raise StaleRoundError(f"round {round_index} is not in progress (no round is; {self.completed_round} completed)")
        return current.offer(client.client_id, round_index, task_id, kind)

    def model_blob(self, client: Session, round_index: int, task_id: str) -> codec.Blob:
        with self._cond:
            self._offer(client, round_index, task_id)
            return self._blob

    def task_open(self, client: Session, round_index: int, task_id: str) -> bool:
        """Whether an update stream in progress may still be accepted (checked per chunk)."""
        with self._cond:
            try:
                self._offer(client, round_index, task_id)
            except FedserError:
                return False
            return True

    def wait_while_open(self, client: Session, round_index: int, task_id: str, unless: threading.Event) -> bool:
        """Block while the task takes answers: True once it no longer does (its round's deadline
        passed on the run's clock, the round or the run ended), False once `unless` is set first."""
        with self._cond:
            while not unless.is_set():
                try:
                    self._offer(client, round_index, task_id)
                except FedserError:
                    return True
                self._cond.wait(timeout=WAKE_S)
            return False

    # ---------------------------------------------------------------- answers
    def secure_round_for(self, client: Session, round_index: int, task_id: str) -> SecureRound:
        """The secure round whose stages run now; it checks the client's task itself."""
        with self._cond:
            if self._secure is None or self._secure.round_index != round_index:
                raise StaleRoundError(f"no secure round {round_index} is open (current round {self.completed_round})")
            return self._secure

    def secure_round_joined(self, client: Session) -> None:
        """The client took part in the round's secure aggregation: its training task is answered
        (GetTask does not hand it out again; the stages go on through the SecAgg* calls)."""
        with self._cond:
            if self._round is not None:
                self._round.answered_securely(client.client_id)

    def training_task(self, client: Session, round_index: int, task_id: str) -> TaskAssignment:
        """The open training task an update answers (its header was checked at the edge)."""
        with self._cond:
            return self._offer(client, round_index, task_id, TaskKind.TRAIN)

    def incoming_update(self, header: UpdateHeader) -> IncomingUpdate:
        """Where an update whose header passed the edge's checks is received and checked."""
        fed = self.config.federation
        # a small update stays in memory: no file to create, write and read back per update
        spill_dir = self._incoming_dir if header.total_len > fed.inline_model_max_bytes else None
        return IncomingUpdate(header.total_len, self._expected_update, spill_dir, DELTA, header.checksum,
                              all_zero=header.empty)

    def submit_update(self, client: Session, header: UpdateHeader, update: CheckedUpdate) -> None:
        """Accept a received and checked update into the published round, which folds it in the
        background; the round does not close before it is.

        Owns the update's file until the round takes it, the last step, which cannot fail:
        everything that can refuse the update runs before it, so a refused update is discarded
        here and an accepted one by the round once folded in."""
        taken = False
        try:
            assert update.norm is not None  # the receiver measures every update's delta.* tensors
            with self._cond:
                scale = self._norm_bound.scale(update.norm, self._global_weights_norm())
            if scale != 1.0:
                log.info("update_clipped", round=header.round, client_id=client.client_id, norm=update.norm, scale=scale)
            current = self._round
            if current is not None:
                current.make_room()
            with self._cond:
                self._await_durable(header.round - 1)
                current = self._round
                if current is None:
                    self._offer(client, header.round, header.task_id, TaskKind.TRAIN)  # raises: no round in progress
                assert current is not None
                current.accept(client.client_id, header, None if header.empty else update, scale)
                if not header.empty:
                    taken = True
                    self._norm_bound.accepted(update.norm, scale)
                client.record.participations += 1
                log.info("update_accepted", round=header.round, client_id=client.client_id, n_samples=header.n_samples,
                         n_reported=current.n_reported, n_sampled=current.n_asked)
                self._cond.notify_all()
        finally:
            if not taken:
                update.discard()

    def _global_weights_norm(self) -> float:
        """The L2 norm of the global weights (w.*), once per round. Called with the lock held."""
        if self._model_norm[0] != self.completed_round:
            self._model_norm = (self.completed_round, l2_norm(self.state, WEIGHT, self._state_read_done))
        return self._model_norm[1]

    def _await_durable(self, round_index: int) -> None:
        """An acked client keeps its c_i⁺, so no update is accepted before the round it builds on is
        on disk: after a crash a client is at most one round ahead of the checkpoint. Called with
        the lock held; the wait is the tail of one checkpoint write."""
        while self._durable_round < round_index:
            if self._stop.is_set() or self.done.is_set() or self._writes_failed:
                raise ServerStoppingError("the server is stopping before the last round: retry later")
            self._cond.wait(timeout=WAKE_S)

    def submit_evaluation(self, client: Session, evaluation: Evaluation) -> None:
        with self._cond:
            current = self._round
            if current is None:
                self._offer(client, evaluation.round, evaluation.task_id, TaskKind.EVALUATE)  # raises
            assert current is not None
            current.accept_evaluation(client.client_id, evaluation)
            self._cond.notify_all()

    def disk_full(self) -> None:
        """An upload could not be parked: no disk space. Clients back off and send again; once the
        disk has stayed full for a whole round deadline the run stops, loudly, as a full disk at
        checkpoint time stops it: what is on disk stays intact for `--resume`."""
        with self._cond:
            now, patience = self.clock(), self.config.federation.round_timeout_s
            if self._disk_full_since is None:
                self._disk_full_since = now
            elif now - self._disk_full_since > patience and self.failure is None:
                self.failure = StateError(f"no disk space to park uploads in {self._incoming_dir} for more "
                                          f"than {patience:g} s (federation.round_timeout_s): free space, then resume")
                log.error("disk_full_stopping", directory=str(self._incoming_dir), seconds=round(now - self._disk_full_since, 1))
                self.stop()

    def disk_has_room(self) -> None:
        """An upload was parked on disk: the disk is not (or no longer) full."""
        with self._cond:
            self._disk_full_since = None

    # ---------------------------------------------------------------- accounting
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

    def record_transfer(self, received: int = 0, sent: int = 0) -> None:
        with self._cond:
            self.bytes_received += received
            self.bytes_sent += sent

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

    # ---------------------------------------------------------------- published by the loop
    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
            self._announce_tasks()

    def publish(self, current: Round | None) -> None:
        """Make `current` the phase in progress: its tasks go out to the parked polls (None: no phase)."""
        with self._cond:
            self._round = current
            if current is not None:
                self._announce_tasks(tuple(current.book.tasks))

    def publish_secure(self, secure: SecureRound | None) -> None:
        """The published round's secure stages run now (None: they are over; late stage calls are refused)."""
        with self._cond:
            self._secure = secure

    def install(self, state: State, blob: codec.Blob, round_index: int) -> None:
        """The round's new global state (views into `blob`, which FetchModel serves from now on)."""
        with self._cond:
            self.state, self._blob, self.completed_round = state, blob, round_index

    def mark_durable(self, round_index: int) -> None:
        with self._cond:
            self._durable_round = round_index
            self._cond.notify_all()

    def writes_failed(self) -> None:
        """A checkpoint could not be written: no update is accepted any more."""
        with self._cond:
            self._writes_failed = True
            self._cond.notify_all()

    def record_round(self, record: dict[str, object]) -> None:
        with self._cond:
            if self.history and self.history[-1].get("round") == record.get("round"):
                self.history[-1] = record  # a resumed round's line, completed
            else:
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
            self._round = None
            self._cond.notify_all()
            self._announce_tasks()

    def wait_for_shutdown_delivery(self, timeout_s: float) -> None:
        """After the last round, give alive clients a chance to hear SHUTDOWN before stopping."""
        if not self.finished:
            return
        deadline = time.monotonic() + timeout_s  # a grace period of the process: real time
        with self._cond:
            while time.monotonic() < deadline and self.sessions.awaiting_shutdown():
                self._cond.wait(timeout=0.2)
