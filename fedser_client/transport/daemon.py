"""The client daemon's loop: join, long-poll for tasks, train or evaluate, stream results.

Transient failures (server not up yet, restarting, network) are retried with jittered
exponential backoff; a lost session (server restarted) leads to a fresh Join. Retrying is
bounded: a server that has not answered for `connect_timeout_s` (at start, or after it went
away: finished, crashed and not resumed) ends the daemon with `ServerUnreachable`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import grpc
import numpy as np

from fedser_client.core.trainer import LocalTrainer, TrainReport, TrainTask
from fedser_client.local_store import LocalStore
from fedser_client.transport.granted_upload import submit_when_granted
from fedser_client.transport.secure import submit_securely
from fedser_shared import PROTOCOL_VERSION, codec, wire
from fedser_shared.checksum import Checksum, Digest, StreamHash
from fedser_shared.config import RunConfig
from fedser_shared.dp import add_gaussian_noise, clip_update, noise_adder
from fedser_shared.errors import CorruptBlobError, FedserError, SecAggError, UnmaskRefusedError
from fedser_shared.logging import get_logger
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc
from fedser_shared.refusal import REPORT_REFUSED, SERVER_FULL, SESSION_LOST, TASK_GONE, refusal_of, retry_after_of
from fedser_shared.train_metrics import TrainMetrics
from fedser_shared.transport import client_channel_options

log = get_logger(__name__)

UPLOAD_RETRY_MAX_S = 60.0  # the longest wait a busy server's retry-after is taken for
# a come-back time at least this long is waited out with the connection closed: an open connection
# costs the server ~20 KB while it waits (benchmarks/results/fleet.md), a new one a handshake
DISCONNECT_AFTER_S = 5.0

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


# the model digests this client checks: a server that knows XXH3 then spares itself the SHA-256
CHECKSUMS_CHECKED = (pb.CHECKSUM_XXH3_128, pb.CHECKSUM_SHA256)


def presence_only(label_counts: list[int]) -> list[int]:
    """Per-class label counts reduced to one bit, for a secure run: [1, 0, ...] with labels, else zeros."""
    return [1 if sum(label_counts) else 0] + [0] * (len(label_counts) - 1) if label_counts else []


class ServerRefused(FedserError):
    """The server answered with a non-retryable status."""


class ServerUnreachable(FedserError):
    """The server has not answered for longer than the client keeps retrying."""

    reason = "server_unreachable"


def _session_lost(exc: grpc.RpcError) -> bool:
    reason = refusal_of(exc)
    if reason is not None:
        return reason in SESSION_LOST
    # a server older than the refusal metadata: read its words
    return (exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            and "session" in (exc.details() or ""))


def _task_gone(exc: grpc.RpcError) -> bool:
    reason = refusal_of(exc)
    if reason is not None:
        return reason in TASK_GONE
    return (exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED)
            and "protocol" not in (exc.details() or ""))


def _report_refused(exc: grpc.RpcError) -> bool:
    reason = refusal_of(exc)
    if reason is not None:
        return reason in REPORT_REFUSED
    return bool(exc.code() == grpc.StatusCode.INVALID_ARGUMENT)


@dataclass(frozen=True)
class ClientIdentity:
    name: str
    feature_name: str
    feature_dim: int
    label_counts: list[int]
    n_unlabeled: int
    n_eval: int
    token: str = ""


@dataclass
class DaemonResult:
    rounds_trained: list[int] = field(default_factory=list)
    rounds_evaluated: list[int] = field(default_factory=list)
    shutdown: bool = False


TrainObserver = Callable[[int, dict[str, np.ndarray], dict[str, np.ndarray], TrainReport], None]


class Backoff:
    def __init__(self, initial_s: float = 0.2, maximum_s: float = 10.0, rng: random.Random | None = None) -> None:
        self.initial_s, self.maximum_s = initial_s, maximum_s
        self._next = initial_s
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self._next = self.initial_s

    def sleep(self, stop: threading.Event) -> None:
        delay = self._rng.uniform(0.5, 1.0) * self._next
        self._next = min(self.maximum_s, self._next * 2)
        stop.wait(delay)

    def sleep_longest(self, stop: threading.Event) -> None:
        """Wait the longest backoff at once: the server said that retrying soon is pointless."""
        self._next = self.maximum_s
        self.sleep(stop)


class ClientDaemon:
    def __init__(
        self,
        target: str,
        identity: ClientIdentity,
        make_trainer: Callable[[RunConfig], LocalTrainer],
        store: LocalStore,
        train_paths: list[str],
        credentials: grpc.ChannelCredentials | None = None,
        connect_timeout_s: float = 600.0,
        observer: TrainObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        disconnect_after_s: float = DISCONNECT_AFTER_S,
    ) -> None:
        self.target = target
        self.identity = identity
        self.make_trainer = make_trainer
        self.store = store
        self.train_paths = train_paths
        self.connect_timeout_s = connect_timeout_s  # how long an unanswering server is retried
        self.observer = observer
        self.clock = clock
        self.wall_clock = wall_clock  # against the tasks' deadlines (seconds since the Unix epoch)
        self._rng = rng or random.Random()
        self._unanswered_since: float | None = None  # start of the current run of calls the server did not answer
        self.stop_event = threading.Event()
        self.credentials = credentials
        self.disconnect_after_s = disconnect_after_s
        self.connections = 0  # channels opened: 1, plus one per come-back time waited out disconnected
        self._channel_lock = threading.Lock()  # the heartbeat thread and the loop swap or use the channel
        self._away = False  # the channel is closed while the loop waits out a come-back time
        self._open_channel()
        self.session: pb.Session | None = None
        self.trainer: LocalTrainer | None = None
        self.config: RunConfig | None = None
        self.heartbeat_interval_s = 10.0
        # whether the server checks XXH3 and takes SubmitSmallUpdate: its model headers say so
        self.server_takes_xxh3 = False
        self.bound_log = log.bind(client=identity.name)
        self.secure_stop_after: str | None = None  # tests: die in a secure round after this stage

    def _open_channel(self) -> None:
        options = client_channel_options()
        self.channel = (grpc.secure_channel(self.target, self.credentials, options) if self.credentials
                        else grpc.insecure_channel(self.target, options))
        self.stub = pb_grpc.CoordinatorStub(self.channel)  # type: ignore[no-untyped-call]
        self.bulk = wire.BulkCalls.on(self.channel)
        self.connections += 1

    def _wait_to_come_back(self, wait_s: float) -> None:
        """Wait out a WAIT's come-back time; a long one with the connection closed (the server holds
        nothing for this client meanwhile), reopened for the next poll."""
        if wait_s < self.disconnect_after_s:
            self.stop_event.wait(wait_s)
            return
        with self._channel_lock:
            self.channel.close()
            self._away = True
        self.bound_log.debug("away_until_next_poll", seconds=round(wait_s, 3))
        try:
            self.stop_event.wait(wait_s)
        finally:
            with self._channel_lock:
                self._open_channel()
                self._away = False

    # ---------------------------------------------------------------- calls
    def _join(self) -> None:
        backoff = Backoff()
        server_key = self.target
        while not self.stop_event.is_set():
            try:
                label_counts, n_unlabeled = self.identity.label_counts, self.identity.n_unlabeled
                if self._server_is_secure():  # the server may learn whether this client has labels, not how many
                    label_counts, n_unlabeled = presence_only(label_counts), min(n_unlabeled, 1)
                reply = self.stub.Join(pb.JoinRequest(
                    protocol_version=PROTOCOL_VERSION, token=self.identity.token, name=self.identity.name,
                    feature_name=self.identity.feature_name, feature_dim=self.identity.feature_dim,
                    label_counts=label_counts, n_unlabeled=n_unlabeled,
                    n_eval=self.identity.n_eval, client_id=self.store.client_id(server_key)), timeout=30)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise ServerRefused(f"server refused to join: {exc.code().name}: {exc.details()}") from None
                self._note_retryable(exc)
                backoff.sleep(self.stop_event)
                continue
            self._unanswered_since = None
            self.session = reply.session
            self.heartbeat_interval_s = reply.heartbeat_interval_s or 10.0
            self.store.save_client_id(server_key, reply.session.client_id)
            config = RunConfig.from_json(reply.settings.run_config_json)
            if self.config is None or config != self.config:
                self.config = config
                self.trainer = self.make_trainer(config)
            self.bound_log = log.bind(client_id=reply.session.client_id, client=self.identity.name)
            self.bound_log.info("joined", server=self.target, rounds=reply.settings.total_rounds)
            return

    def _server_is_secure(self) -> bool:
        """Whether the run uses secure aggregation (Describe, before Join; a server without Describe: no)."""
        try:
            info = self.stub.Describe(pb.DescribeRequest(protocol_version=PROTOCOL_VERSION), timeout=30)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return False
            raise
        return bool(info.secure_aggregation and info.secure_aggregation != "off")

    def _fetch_model(self, task: pb.Task) -> dict[str, np.ndarray]:
        stream = self.bulk.fetch_model(pb.FetchModelRequest(
            protocol_version=PROTOCOL_VERSION, session=self.session, round=task.round, task_id=task.task_id,
            checksums=CHECKSUMS_CHECKED), timeout=600)
        first = next(stream, None)
        if not isinstance(first, pb.ModelChunk) or first.WhichOneof("payload") != "header":
            raise CorruptBlobError("model stream did not start with a header")
        with codec.BlobAssembler(first.header.total_len, self._model_digest(first.header)) as assembler:
            for message in stream:
                if not isinstance(message, memoryview):
                    raise CorruptBlobError("model stream holds a second header")
                assembler.feed(message)
            return codec.decode(assembler.finish())

    def _global_state(self, received: wire.ReceivedTask) -> dict[str, np.ndarray]:
        """The task's global state: inline in the task for a small model, else streamed; checked either way."""
        if received.model_header is None or received.model_data is None:
            return self._fetch_model(received.task)
        header = received.model_header
        data = received.model_data
        if len(data) != header.total_len:
            raise CorruptBlobError(f"inline model holds {len(data)} bytes, its header announced {header.total_len}")
        expected = self._model_digest(header)
        if expected.kind.of(data) != expected.value:
            raise CorruptBlobError(f"blob checksum mismatch ({expected.kind.value})")
        # read-only views of the received message: checked where it lies, never copied
        return codec.decode(data)

    def _model_digest(self, header: pb.BlobHeader) -> Digest:
        self.server_takes_xxh3 = bool(header.xxh3_128)
        return Digest.preferred(header.sha256, header.xxh3_128)

    def _update_header(self, task: pb.Task, metrics: TrainMetrics, total_len: int, checksum: Checksum) -> pb.UpdateHeader:
        return pb.UpdateHeader(
            protocol_version=PROTOCOL_VERSION, session=self.session, round=task.round, task_id=task.task_id,
            n_samples=metrics.n_samples, metrics=metrics.to_pb(),
            blob=pb.BlobHeader(total_len=total_len,
                               checksum=pb.CHECKSUM_XXH3_128 if checksum is Checksum.XXH3_128 else pb.CHECKSUM_SHA256))

    @staticmethod
    def _trailer(checksum: Checksum, digest: bytes) -> pb.BlobTrailer:
        return pb.BlobTrailer(xxh3_128=digest) if checksum is Checksum.XXH3_128 else pb.BlobTrailer(sha256=digest)

    def _update_messages(self, task: pb.Task, update: Mapping[str, np.ndarray], report: TrainReport) -> bytes | Iterator[pb.UpdateChunk | bytes]:
        """What carries the update: one SubmitSmallUpdate message (bytes) for an update within the
        run's inline limit, to a server that takes it; else SubmitUpdate's stream. XXH3 where the
        server checks it, else SHA-256."""
        parts = codec.encode_parts(update)
        total_len = sum(len(p) for p in parts)
        checksum = Checksum.XXH3_128 if self.server_takes_xxh3 else Checksum.SHA256
        header = self._update_header(task, report.metrics, total_len, checksum)
        limit = self.config.federation.inline_model_max_bytes if self.config else 0
        if not (self.server_takes_xxh3 and total_len <= limit):
            return self._update_stream(header, parts, checksum)
        hasher = checksum.new()
        for part in parts:
            hasher.update(part)
        return wire.small_update_message(header, self._trailer(checksum, hasher.digest()), parts)

    def _update_stream(self, header: pb.UpdateHeader, parts: list[bytes | memoryview],
                       checksum: Checksum) -> Iterator[pb.UpdateChunk | bytes]:
        """The update streamed straight from its tensors (no blob is built), hashed as it goes:
        the checksum travels in the trailer."""
        yield pb.UpdateChunk(header=header)
        hasher = StreamHash(checksum)
        try:
            for run in codec.chunked(parts):
                for piece in run:
                    hasher.update(piece)
                yield wire.data_message(*run)
            yield pb.UpdateChunk(trailer=self._trailer(checksum, hasher.digest()))
        finally:
            hasher.close()

    def submit_update(self, task: pb.Task, update: Mapping[str, np.ndarray], report: TrainReport) -> None:
        """Send the update; while the server says when to come back (all its upload slots taken),
        wait that long, jittered, and send it again, up to the task's deadline."""
        tries = 0
        while True:
            messages = self._update_messages(task, update, report)
            try:
                if isinstance(messages, bytes):
                    self.bulk.submit_small_update(messages, timeout=600)
                else:
                    submit_when_granted(self.bulk.submit_update, messages, timeout_s=600)
                return
            except grpc.RpcError as exc:
                retry_after_s = retry_after_of(exc)
                left_s = task.deadline_unix_s - self.wall_clock() if task.deadline_unix_s else UPLOAD_RETRY_MAX_S
                if retry_after_s is None or left_s <= 0 or self.stop_event.is_set():
                    raise
                tries += 1
                delay_s = min(self._rng.uniform(0.75, 1.25) * min(retry_after_s, UPLOAD_RETRY_MAX_S), left_s)
                self.bound_log.info("upload_slots_busy_retrying", round=task.round, tries=tries, delay_s=round(delay_s, 3))
                if self.stop_event.wait(delay_s):
                    raise

    def _train(self, received: wire.ReceivedTask, result: DaemonResult) -> None:
        assert self.trainer is not None
        task = received.task
        global_state = self._global_state(received)
        local_state = self.store.load_state(self.train_paths)
        train_task = TrainTask(round=task.round, lr=task.train.lr, local_epochs=task.train.local_epochs or 1,
                               pseudo_threshold=task.train.pseudo_label_threshold)
        update, new_state, report = self.trainer.train(global_state, train_task, local_state)
        assert self.config is not None and self.session is not None
        privacy, empty = self.config.privacy, report.metrics.empty
        # differential privacy (docs/privacy.md): clipped to the task's C; in distributed mode, this client's
        # share of the noise, drawn from the OS's entropy (a seeded draw could be taken off again)
        released = clip_update(update, task.train.dp_clip_norm)[0] if task.train.dp_clip_norm > 0 else update
        noise_rng = np.random.default_rng()
        if privacy.secure:  # only the masked vector leaves: no header, no metrics
            rng = np.random.default_rng()  # stochastic rounding
            # under DP every client weighs the same (its n_samples would scale its influence beyond C)
            weight = (0 if empty else privacy.secagg_max_weight) if privacy.dp_enabled else report.metrics.n_samples
            if not submit_securely(self.stub, self.session, task, self.config, released, weight, rng,
                                   transform=noise_adder(task.train.dp_noise_std, noise_rng),
                                   stop_after=self.secure_stop_after):
                self.stop_event.set()  # tests: a client that dies in the middle of a secure round
                return
        else:
            if not empty:  # an empty participation sends zeros, which the server checks
                released = add_gaussian_noise(released, task.train.dp_noise_std, noise_rng)
            self.submit_update(task, released, report)
        # c_i+ is kept only once the server took the update that carries dc_i
        self.store.save_state(new_state, self.train_paths)
        result.rounds_trained.append(task.round)
        if self.observer is not None:
            self.observer(task.round, global_state, update, report)
        metrics = report.metrics
        self.bound_log.info("update_sent", round=task.round, n_samples=metrics.n_samples, loss=round(metrics.loss, 4),
                            steps=metrics.local_steps, seconds=round(metrics.train_seconds, 3))

    def _evaluate(self, received: wire.ReceivedTask, result: DaemonResult) -> None:
        assert self.trainer is not None
        task = received.task
        global_state = self._global_state(received)
        matrix, loss = self.trainer.evaluate(global_state)
        self.stub.SubmitEvaluation(pb.EvaluationReport(
            protocol_version=PROTOCOL_VERSION, session=self.session, round=task.round, task_id=task.task_id,
            num_classes=matrix.shape[0], confusion=matrix.reshape(-1).tolist(), loss=loss), timeout=60)
        result.rounds_evaluated.append(task.round)

    def _note_retryable(self, exc: grpc.RpcError) -> None:
        """A retryable failure. A refusal is an answer (the server is there); calls that get no answer
        at all are retried for `connect_timeout_s`, then the daemon gives up."""
        now = self.clock()
        if refusal_of(exc) is not None:
            self._unanswered_since = None
        elif self._unanswered_since is None:
            self._unanswered_since = now
        elif now - self._unanswered_since > self.connect_timeout_s:
            raise ServerUnreachable(
                f"gave up on the server at {self.target}: no answer for {now - self._unanswered_since:.0f} s "
                f"(--connect-timeout {self.connect_timeout_s:.0f}); last error {exc.code().name}: {exc.details()}")

    def _heartbeats(self) -> None:
        while not self.stop_event.wait(self.heartbeat_interval_s):
            with self._channel_lock:
                # away: the server chose the come-back time, inside the client timeout; the next poll is the call
                stub = None if self._away else self.stub
            if self.session is None or stub is None:
                continue
            try:
                stub.Heartbeat(pb.HeartbeatRequest(protocol_version=PROTOCOL_VERSION, session=self.session), timeout=10)
            except (grpc.RpcError, ValueError):
                pass  # the main loop notices a lost server on its next call (ValueError: the loop closed the channel)

    # ---------------------------------------------------------------- loop
    def run(self) -> DaemonResult:
        result = DaemonResult()
        heartbeat = threading.Thread(target=self._heartbeats, name="fedser-heartbeat", daemon=True)
        self.store.load_state(self.train_paths)  # a corrupt c_i is set aside (and named) now, not at the first task
        self._join()
        heartbeat.start()
        backoff = Backoff()
        try:
            while not self.stop_event.is_set():
                try:
                    received = self.bulk.get_task(
                        pb.GetTaskRequest(protocol_version=PROTOCOL_VERSION, session=self.session, checksums=CHECKSUMS_CHECKED),
                        timeout=(self.config.federation.poll_timeout_s if self.config else 20.0) + 15)
                    self._unanswered_since = None
                    task = received.task
                    if task.kind == pb.TASK_KIND_SHUTDOWN:
                        result.shutdown = True
                        self.bound_log.info("shutdown_received", round=task.round)
                        break
                    if task.kind == pb.TASK_KIND_TRAIN:
                        self._train(received, result)
                    elif task.kind == pb.TASK_KIND_EVALUATE:
                        self._evaluate(received, result)
                    elif task.retry_after_s > 0:
                        self._wait_to_come_back(task.retry_after_s)
                    backoff.reset()
                except grpc.RpcError as exc:
                    code = exc.code()
                    if _session_lost(exc):
                        # the server restarted or ended the session: join again, keeping the id and c_i
                        self.bound_log.warning("session_lost_rejoining", code=code.name, detail=exc.details())
                        self._join()
                    elif _task_gone(exc):
                        self.bound_log.warning("task_no_longer_valid", code=code.name, detail=exc.details())
                    elif refusal_of(exc) in SERVER_FULL:
                        # the update is trained again for the next try: not before the server has room
                        self.bound_log.warning("server_full_waiting", code=code.name, reason=refusal_of(exc),
                                               detail=exc.details())
                        backoff.sleep_longest(self.stop_event)
                    elif code in RETRYABLE:
                        self._note_retryable(exc)
                        self.bound_log.info("server_unreachable_retrying", code=code.name)
                        backoff.sleep(self.stop_event)
                    elif _report_refused(exc):
                        self.bound_log.warning("report_refused_continuing", code=code.name, reason=refusal_of(exc),
                                               detail=exc.details())
                        backoff.sleep(self.stop_event)
                    else:
                        raise ServerRefused(f"server refused: {code.name}: {exc.details()}") from None
                except (SecAggError, UnmaskRefusedError) as exc:  # e.g. it refused to reveal both secrets of a peer
                    self.bound_log.warning("secure_round_left", reason=exc.reason, detail=str(exc))
                except CorruptBlobError as exc:
                    self.bound_log.warning("model_transfer_corrupt_retrying", detail=str(exc))
                    backoff.sleep(self.stop_event)
        finally:
            self.stop_event.set()
            self.channel.close()
        return result

    def stop(self) -> None:
        self.stop_event.set()
