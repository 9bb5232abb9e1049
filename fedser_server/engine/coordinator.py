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

from fedser_server.core.norm_bound import delta_scale
from fedser_server.core.records import RoundTally
from fedser_server.core.reports import UpdateHeader
from fedser_server.core.round_book import TaskAssignment, TaskKind
from fedser_server.core.strategy import State, TensorSpec
from fedser_server.engine.incoming import CheckedUpdate, IncomingUpdate
from fedser_server.engine.round import Round
from fedser_server.engine.sessions import Joined, Session, Sessions
from fedser_server.engine.stats import RunStats
from fedser_server.state.registry import ClientRecord
from fedser_shared import codec
from fedser_shared.config import RunConfig
from fedser_shared.errors import (
    FedserError,
    InvalidUpdateError,
    NotParticipatingError,
    ServerStoppingError,
    SessionExpiredError,
    StaleRoundError,
)
from fedser_shared.logging import get_logger
from fedser_shared.tensor_names import DELTA

log = get_logger(__name__)

BLOB_SLACK_BYTES = 64 * 1024


class Coordinator:
    def __init__(self, config: RunConfig, lock: threading.Condition, sessions: Sessions, state: State, blob: codec.Blob,
                 completed_round: int, expected_update: Mapping[str, TensorSpec], incoming_dir: Path,
                 history: list[dict[str, object]] | None = None) -> None:
        self.config = config
        self._cond = self.lock = lock
        self.sessions = sessions
        self.registry = sessions.registry
        self.feature_dim = sessions.feature_dim
        self.client_timeout_s = config.server.client_timeout_s
        self.heartbeat_interval_s = config.server.heartbeat_s
        self._task_listeners: list[Callable[[tuple[str, ...] | None], None]] = []  # polls parked elsewhere (an event loop)
        self._stop = threading.Event()
        self._writes_failed = False
        self.done = threading.Event()
        self._round: Round | None = None  # the phase in progress, as published
        self.state, self._blob, self.completed_round = state, blob, completed_round
        self._durable_round = completed_round  # the last round whose checkpoint is on disk
        self._expected_update = dict(expected_update)
        self._max_update_bytes = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in expected_update.values()) + BLOB_SLACK_BYTES
        self._incoming_dir = incoming_dir
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
            self.sessions.touch(client)
            if self.finished:
                client.shutdown_sent = True
                self._cond.notify_all()
                return TaskAssignment(TaskKind.SHUTDOWN, round=self.completed_round)
            if self._stop.is_set() or self.done.is_set():
                raise ServerStoppingError("the server is stopping before the last round: retry later")
            if client.ended:
                raise SessionExpiredError(f"session of client '{client.client_id}' expired ({client.ended}): join again")
            owed = self._round.owed(client.client_id) if self._round is not None else None
            return owed if owed is not None else TaskAssignment(TaskKind.WAIT, retry_after_s=0.0)

    def add_task_listener(self, listener: Callable[[tuple[str, ...] | None], None]) -> None:
        """Call `listener` (from the posting thread, lock held: it must not block) whenever tasks
        are posted, sessions end or the run ends: when a parked poll's answer may have changed.
        It gets the clients concerned, or None when every client is."""
        with self._cond:
            self._task_listeners.append(listener)

    def _announce_tasks(self, client_ids: tuple[str, ...] | None = None) -> None:
        for listener in self._task_listeners:
            listener(client_ids)

    def _offer(self, client: Session, round_index: int, task_id: str) -> TaskAssignment:
        current = self._round
        if current is None:
            raise StaleRoundError(f"round {round_index} is not open (current round {self.completed_round})")
        return current.offer(client.client_id, round_index, task_id)

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

    # ---------------------------------------------------------------- answers
    def check_update_header(self, client: Session, header: UpdateHeader) -> TaskAssignment:
        with self._cond:
            task = self._offer(client, header.round, header.task_id)
            if task.kind is not TaskKind.TRAIN:
                raise NotParticipatingError(f"task '{header.task_id}' is not a training task")
        # a client trains on its labeled examples plus pseudo-labels drawn from its unlabeled pool
        plausible = client.n_labeled + client.n_unlabeled
        if header.n_samples > plausible:
            raise InvalidUpdateError(f"n_samples {header.n_samples} is implausible: the client declared "
                                     f"{client.n_labeled} labeled and {client.n_unlabeled} unlabeled examples")
        if header.total_len > self._max_update_bytes:
            raise InvalidUpdateError(f"update of {header.total_len} bytes exceeds the model-derived limit of {self._max_update_bytes}")
        return task

    def incoming_update(self, header: UpdateHeader) -> IncomingUpdate:
        """Where an update whose header passed `check_update_header` is received and checked."""
        fed = self.config.federation
        measure = DELTA if fed.update_norm_max is not None else None
        # a small update stays in memory: no file to create, write and read back per update
        spill_dir = self._incoming_dir if header.total_len > fed.inline_model_max_bytes else None
        return IncomingUpdate(header.total_len, self._expected_update, spill_dir, measure, header.checksum)

    def submit_update(self, client: Session, header: UpdateHeader, update: CheckedUpdate) -> None:
        """Accept a received and checked update into the published round, which folds it in the
        background; the round does not close before it is.

        Owns the update's file until the round takes it, the last step, which cannot fail:
        everything that can refuse the update runs before it, so a refused update is discarded
        here and an accepted one by the round once folded in."""
        taken = False
        try:
            fed = self.config.federation
            scale = delta_scale(update.norm, fed.update_norm_max, fed.update_norm_action)
            if scale != 1.0:
                log.info("update_clipped", round=header.round, client_id=client.client_id, norm=update.norm, scale=scale)
            current = self._round
            if current is not None:
                current.make_room()
            with self._cond:
                self._await_durable(header.round - 1)
                self._offer(client, header.round, header.task_id)
                current = self._round
                assert current is not None
                current.accept(client.client_id, header, None if header.empty else update, scale)
                taken = not header.empty
                client.record.participations += 1
                log.info("update_accepted", round=header.round, client_id=client.client_id, n_samples=header.n_samples,
                         n_reported=current.n_reported, n_sampled=current.n_asked)
                self._cond.notify_all()
        finally:
            if not taken:
                update.discard()

    def _await_durable(self, round_index: int) -> None:
        """An acked client keeps its c_i⁺, so no update is accepted before the round it builds on is
        on disk: after a crash a client is at most one round ahead of the checkpoint. Called with
        the lock held; the wait is the tail of one checkpoint write."""
        while self._durable_round < round_index:
            if self._stop.is_set() or self.done.is_set() or self._writes_failed:
                raise ServerStoppingError("the server is stopping before the last round: retry later")
            self._cond.wait(timeout=0.5)

    def submit_evaluation(self, client: Session, round_index: int, task_id: str, confusion: np.ndarray, loss: float) -> None:
        classes = self.config.num_classes
        if confusion.shape != (classes * classes,) or (confusion < 0).any():
            raise InvalidUpdateError(f"confusion matrix must have {classes}x{classes} non-negative counts")
        if int(confusion.sum()) > client.n_eval:
            raise InvalidUpdateError(f"confusion matrix counts {int(confusion.sum())} examples, "
                                     f"the client declared {client.n_eval} for evaluation")
        with self._cond:
            self._offer(client, round_index, task_id)
            current = self._round
            assert current is not None
            current.accept_evaluation(client.client_id, round_index, task_id, confusion.reshape(classes, classes).astype(np.int64), loss)
            self._cond.notify_all()

    # ---------------------------------------------------------------- accounting
    def record_refusal(self, reason: str, client_id: str, round_index: int, message: str, rpc: str = "SubmitUpdate") -> None:
        """Count a refused call: updates by reason (`refusals`), other calls by (rpc, reason)
        (`request_refusals`). The next metrics line carries every refusal since the previous one,
        so refusals that arrive after their round closed are still on record."""
        with self._cond:
            if rpc == "SubmitUpdate":
                self.refusals[reason] += 1
                self._unrecorded_refusals[reason] += 1
            else:
                self.request_refusals[(rpc, reason)] += 1
                self._unrecorded_request_refusals[f"{rpc}.{reason}"] += 1
        event = "update_refused" if rpc == "SubmitUpdate" else "request_refused"
        log.warning(event, rpc=rpc, round=round_index, client_id=client_id[:64], reason=reason, detail=message[:300])

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
