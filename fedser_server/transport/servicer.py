"""The Coordinator gRPC servicer: unpack messages, call the round engine, map errors to codes.

GetTask and Heartbeat are coroutines and run on the server's event loop (a parked long-poll
holds no thread); the others block (disk, hashing, streaming) and run on worker threads
(`threaded.ThreadContext` stands in for the sync API's context there)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import grpc
import numpy as np

from fedser_server.core.reports import MAX_COUNT, UpdateHeader, check_loss
from fedser_server.core.round_book import TaskAssignment, TaskKind
from fedser_server.engine.coordinator import Coordinator
from fedser_server.engine.sessions import Session
from fedser_server.transport.admission import Limits, PollGate, UploadGate
from fedser_server.transport.long_poll import TaskPolls
from fedser_shared import PROTOCOL_VERSION, codec, wire
from fedser_shared.checksum import Checksum, Digest
from fedser_shared.errors import (
    AuthenticationError,
    ClientCancelledError,
    ConfigError,
    CorruptBlobError,
    FedserError,
    InvalidRequestError,
    InvalidUpdateError,
    NotParticipatingError,
    ProtocolMismatchError,
    ServerBusyError,
    ServerStoppingError,
    SessionExpiredError,
    StaleRoundError,
    UnknownClientError,
)
from fedser_shared.logging import get_logger
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc
from fedser_shared.refusal import REFUSAL_METADATA_KEY

log = get_logger(__name__)

STATUS_OF: dict[type[FedserError], grpc.StatusCode] = {
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    SessionExpiredError: grpc.StatusCode.UNAUTHENTICATED,
    ServerStoppingError: grpc.StatusCode.UNAVAILABLE,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    ProtocolMismatchError: grpc.StatusCode.FAILED_PRECONDITION,
    UnknownClientError: grpc.StatusCode.PERMISSION_DENIED,
    NotParticipatingError: grpc.StatusCode.PERMISSION_DENIED,
    StaleRoundError: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidUpdateError: grpc.StatusCode.INVALID_ARGUMENT,
    CorruptBlobError: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    ServerBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_TASK_KIND = {
    TaskKind.WAIT: pb.TASK_KIND_WAIT,
    TaskKind.TRAIN: pb.TASK_KIND_TRAIN,
    TaskKind.EVALUATE: pb.TASK_KIND_EVALUATE,
    TaskKind.SHUTDOWN: pb.TASK_KIND_SHUTDOWN,
}

F = TypeVar("F", bound=Callable[..., Any])

# past its task's deadline an upload is refused anyway; a client that stalls mid-stream
# (suspended, wedged link) is cut off then, so it cannot keep an upload slot
STALL_GRACE_S = 2.0


def refusal_reason(error: FedserError) -> str:
    """The key of the refusal counters, logs and trailing metadata (e.g. 'stale_round')."""
    return error.reason


def status_code_for(error: FedserError) -> grpc.StatusCode:
    for kind, code in STATUS_OF.items():
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def _mapped(method: F) -> F:
    """A unary handler whose FedserErrors become counted, logged refusals with a status code."""
    @functools.wraps(method)
    def wrapper(self: CoordinatorServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except FedserError as exc:
            session = getattr(request, "session", None)
            self._refuse(context, method.__name__, exc, session.client_id if session is not None else "",
                         getattr(request, "round", 0))

    return wrapper  # type: ignore[return-value]


def _mapped_on_loop(method: F) -> F:
    """`_mapped` for a coroutine handler (one that runs on the server's event loop)."""
    @functools.wraps(method)
    async def wrapper(self: CoordinatorServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except FedserError as exc:
            session = getattr(request, "session", None)
            await self._refuse_on_loop(context, method.__name__, exc, session.client_id if session is not None else "",
                                       getattr(request, "round", 0))

    return wrapper  # type: ignore[return-value]


def check_protocol(version: int) -> None:
    if version != PROTOCOL_VERSION:
        raise ProtocolMismatchError(f"protocol version mismatch: client speaks {version}, server speaks {PROTOCOL_VERSION}")


def task_message(task: TaskAssignment) -> pb.Task:
    return pb.Task(
        kind=_TASK_KIND[task.kind], round=task.round, task_id=task.task_id,
        train=pb.TrainSpec(lr=task.lr, local_epochs=task.local_epochs,
                           pseudo_label_threshold=task.pseudo_threshold, participation=task.participation),
        deadline_unix_s=task.deadline_unix_s, retry_after_s=task.retry_after_s)


_CHECKSUM_OF = {pb.CHECKSUM_SHA256: Checksum.SHA256, pb.CHECKSUM_XXH3_128: Checksum.XXH3_128}


def model_header(blob: codec.Blob, sha256_too: bool = True) -> pb.BlobHeader:
    """A model's length and digests: XXH3 for current clients, and SHA-256 (computed once per
    model, on first use) unless the client said it checks XXH3."""
    header = pb.BlobHeader(total_len=blob.total_len, xxh3_128=blob.xxh3_128)
    if sha256_too:
        header.sha256 = blob.sha256
    return header


def wants_sha256(checksums: Iterable[int]) -> bool:
    """Whether a request's client needs the SHA-256 digest of a model (it did not list XXH3)."""
    return pb.CHECKSUM_XXH3_128 not in checksums


def checked_header(head: pb.UpdateHeader, num_classes: int) -> UpdateHeader:
    """An update's header message checked into a typed value (InvalidUpdateError otherwise)."""
    checksum = _CHECKSUM_OF.get(head.blob.checksum)
    if checksum is None:
        raise InvalidUpdateError(f"unknown checksum {head.blob.checksum}")
    metrics = head.metrics
    return UpdateHeader.checked(
        round=head.round, task_id=head.task_id, n_samples=head.n_samples,
        total_len=head.blob.total_len, loss=metrics.loss,
        pseudo_taken_per_class=metrics.pseudo_taken_per_class,
        pseudo_correct_per_class=metrics.pseudo_correct_per_class,
        pseudo_with_truth=metrics.pseudo_with_truth, num_classes=num_classes,
        pseudo_candidates=metrics.pseudo_candidates, pseudo_pass_tau=metrics.pseudo_pass_tau,
        pseudo_pass_kappa=metrics.pseudo_pass_kappa, checksum=checksum)


def trailer_digest(header: UpdateHeader, trailer: pb.BlobTrailer) -> Digest:
    """The digest the trailer carries for the checksum its header announced."""
    return Digest(header.checksum, trailer.xxh3_128 if header.checksum is Checksum.XXH3_128 else trailer.sha256)


def model_messages(blob: codec.Blob, sha256_too: bool = True) -> Iterator[pb.ModelChunk | bytes]:
    """FetchModel's reply: the header, then data messages framed straight from the round's blob
    (`wire.data_message`: one copy per chunk, nothing kept per client or per round)."""
    yield pb.ModelChunk(header=model_header(blob, sha256_too))
    for chunk in blob.chunks():
        yield wire.data_message(chunk)


class _InlineModel:
    """The task's inline copy of the current global blob, built and serialised once per round,
    not per client: a task's reply is its small fields serialised, then these bytes appended
    (one copy of the model per client, where a `Task` holding the model costs two)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blob: codec.Blob | None = None
        self._message = pb.InlineBlob()
        self._fields: dict[bool, tuple[pb.InlineBlob, bytes]] = {}  # with SHA-256 -> (source message, field)

    def of(self, blob: codec.Blob) -> pb.InlineBlob:
        """The model with its XXH3 digest."""
        with self._lock:
            if self._blob is not blob:
                # bytes() is free on bytes and copies a blob held as a buffer view once per round
                data = bytes(blob.data)
                self._message = pb.InlineBlob(header=model_header(blob, sha256_too=False), data=data)
                self._blob = blob
                self._fields = {}
            return self._message

    def field_of(self, blob: codec.Blob, sha256_too: bool) -> bytes:
        """`Task.model` holding `blob`, serialised as a field to append to a serialised Task."""
        message = self.of(blob)
        with self._lock:
            source, field = self._fields.get(sha256_too, (None, b""))
            if source is not message:
                full = pb.InlineBlob(header=model_header(blob), data=message.data) if sha256_too else message
                field = wire.length_delimited_field(TASK_MODEL_FIELD, full.SerializeToString())
                self._fields[sha256_too] = (message, field)
            return field


TASK_MODEL_FIELD = pb.Task.DESCRIPTOR.fields_by_name["model"].number


class _EndedEarly(CorruptBlobError):
    """The stream ended before its announced length and without a trailer: cut, or truncated."""


def _went_away(context: grpc.ServicerContext, settle_s: float = 1.0) -> bool:
    """Whether the client cancelled or vanished. A stream cut by a cancel or a dropped connection
    can end like a short one, with the call marked done a moment later: wait that moment."""
    deadline = time.monotonic() + settle_s
    while context.is_active():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@contextmanager
def _cancel_at(context: grpc.ServicerContext, deadline_unix_s: float) -> Iterator[None]:
    timer = threading.Timer(max(0.0, deadline_unix_s - time.time()) + STALL_GRACE_S, context.cancel)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, coordinator: Coordinator, poll_timeout_s: float, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        self.coordinator = coordinator
        self.poll_timeout_s = poll_timeout_s
        self.limits = limits
        self._inline_model = _InlineModel()
        self._polls = PollGate(limits.parked_polls_cap)
        self._uploads = UploadGate(limits.uploads, limits.waiting_uploads_cap)
        self._polls_on_loop: TaskPolls | None = None  # made on the server's event loop, at the first poll

    def _refuse(self, context: grpc.ServicerContext, rpc: str, error: FedserError, client_id: str, round_index: int,
                code: grpc.StatusCode | None = None) -> NoReturn:
        """Count and log the refusal, name its reason in the trailing metadata, end the call."""
        reason = refusal_reason(error)
        self.coordinator.record_refusal(reason, client_id, round_index, str(error), rpc=rpc)
        context.set_trailing_metadata(((REFUSAL_METADATA_KEY, reason),))
        context.abort(code or status_code_for(error), str(error))

    async def _refuse_on_loop(self, context: grpc.aio.ServicerContext, rpc: str, error: FedserError, client_id: str,
                              round_index: int) -> NoReturn:
        """`_refuse` for the handlers that run on the event loop."""
        reason = refusal_reason(error)
        self.coordinator.record_refusal(reason, client_id, round_index, str(error), rpc=rpc)
        context.set_trailing_metadata(((REFUSAL_METADATA_KEY, reason),))
        await context.abort(status_code_for(error), str(error))
        raise AssertionError("abort returns only by raising")

    def _client(self, version: int, session: pb.Session) -> Session:
        check_protocol(version)
        return self.coordinator.authenticate(session.client_id, session.session_token)

    @_mapped
    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinReply:
        check_protocol(request.protocol_version)
        joined = self.coordinator.join(
            request.name, request.feature_name, request.feature_dim, list(request.label_counts),
            request.n_unlabeled, request.n_eval, request.client_id, request.token)
        config = self.coordinator.config
        return pb.JoinReply(
            session=pb.Session(client_id=joined.record.client_id, session_token=joined.session_token),
            settings=pb.RunSettings(feature_name=config.features.name, feature_dim=self.coordinator.feature_dim,
                                    num_classes=config.num_classes, total_rounds=config.federation.rounds,
                                    run_config_json=config.to_json()),
            heartbeat_interval_s=self.coordinator.heartbeat_interval_s)

    @_mapped_on_loop
    async def GetTask(self, request: pb.GetTaskRequest, context: grpc.aio.ServicerContext) -> pb.Task | bytes:
        """On the event loop: a parked poll is a coroutine waiting for the coordinator to post tasks.
        The task is serialised by hand when it carries the model inline (see `_InlineModel`)."""
        client = self._client(request.protocol_version, request.session)
        with self._polls.park() as parked:
            remaining = context.time_remaining()
            timeout = self.poll_timeout_s if remaining is None else max(0.0, min(self.poll_timeout_s, remaining - 1.0))
            task = await self._task_polls().next_task(client, timeout if parked else 0.0)
        if not parked and task.kind is TaskKind.WAIT:
            retry = self._polls.retry_after_s(len(self.coordinator.registry.clients), self.poll_timeout_s)
            task = dataclasses.replace(task, retry_after_s=retry)
        message = task_message(task)
        model = (self._inline_model_field(client, task, wants_sha256(request.checksums))
                 if task.kind in (TaskKind.TRAIN, TaskKind.EVALUATE) else b"")
        return message.SerializeToString() + model if model else message

    def _task_polls(self) -> TaskPolls:
        if self._polls_on_loop is None:
            self._polls_on_loop = TaskPolls(self.coordinator, asyncio.get_running_loop())
        return self._polls_on_loop

    def _inline_model_field(self, client: Session, task: TaskAssignment, sha256_too: bool) -> bytes:
        """A small global state to put into the task itself, so the client needs no FetchModel; b"" otherwise."""
        try:
            blob = self.coordinator.model_blob(client, task.round, task.task_id)
        except FedserError:
            return b""  # the round closed meanwhile: the client's FetchModel hears why
        if blob.total_len > self.coordinator.config.federation.inline_model_max_bytes:
            return b""
        self.coordinator.record_transfer(sent=blob.total_len)
        return self._inline_model.field_of(blob, sha256_too)

    def FetchModel(self, request: pb.FetchModelRequest, context: grpc.ServicerContext) -> Iterator[pb.ModelChunk | bytes]:
        try:
            client = self._client(request.protocol_version, request.session)
            blob = self.coordinator.model_blob(client, request.round, request.task_id)
        except FedserError as exc:
            self._refuse(context, "FetchModel", exc, request.session.client_id, request.round)
        yield from model_messages(blob, wants_sha256(request.checksums))
        self.coordinator.record_transfer(sent=blob.total_len)

    def SubmitUpdate(self, request_iterator: Iterator[pb.UpdateChunk | memoryview], context: grpc.ServicerContext) -> pb.UpdateAck:
        """Messages come from `wire.read_update_chunk`: data chunks as memoryviews, the rest as protobuf."""
        client_id, round_index = "", 0
        try:
            first = next(request_iterator, None)
            if not isinstance(first, pb.UpdateChunk) or first.WhichOneof("payload") != "header":
                raise InvalidUpdateError("the first message of an update stream must be its header")
            head = first.header
            client_id, round_index = head.session.client_id, head.round
            client = self._client(head.protocol_version, head.session)
            header = checked_header(head, self.coordinator.config.num_classes)
            task = self.coordinator.check_update_header(client, header)

            def still_wanted() -> None:
                if not context.is_active():
                    raise grpc.RpcError("the client went away while its update waited to be received")
                if not self.coordinator.task_open(client, header.round, header.task_id):
                    raise StaleRoundError(f"round {header.round} closed while the update waited to be received")

            with self._uploads.slot(still_wanted), _cancel_at(context, task.deadline_unix_s):
                self._receive_update(client, header, request_iterator)
        except FedserError as exc:
            if isinstance(exc, _EndedEarly) and _went_away(context):
                # a stream cut short because the client cancelled (or died) is not a corrupt blob
                self._refuse(context, "SubmitUpdate", ClientCancelledError("the client cancelled the upload"), client_id,
                             round_index, code=grpc.StatusCode.CANCELLED)
            self._refuse(context, "SubmitUpdate", exc, client_id, round_index)
        except grpc.RpcError:
            # the client vanished mid-stream (cancelled, killed, cut off): nothing it sent is kept
            reason = "stream_broken" if context.is_active() else ClientCancelledError.reason
            self.coordinator.record_refusal(reason, client_id, round_index, "the update stream ended abnormally")
            raise
        return pb.UpdateAck(accepted=True, message="update accepted")

    def _receive_update(self, client: Session, header: UpdateHeader,
                        messages: Iterator[pb.UpdateChunk | memoryview]) -> None:
        with self.coordinator.incoming_update(header) as incoming:
            for message in messages:
                if not isinstance(message, memoryview):
                    if message.WhichOneof("payload") != "trailer":
                        break
                    if next(messages, None) is not None:
                        raise InvalidUpdateError("an update stream ends with its trailer")
                    self.coordinator.submit_update(client, header, incoming.finish(trailer_digest(header, message.trailer)))
                    return
                if not message:
                    break
                # a straggler still streaming when its round closes is cut off, not buffered to the end
                if not self.coordinator.task_open(client, header.round, header.task_id):
                    raise StaleRoundError(f"round {header.round} closed while the update was streaming")
                incoming.feed(message)
                self.coordinator.record_transfer(received=len(message))
            else:
                if incoming.received < incoming.total_len:
                    raise _EndedEarly(f"blob truncated: received {incoming.received} of {incoming.total_len} bytes")
                raise InvalidUpdateError("the update stream ended without its checksum trailer")
        raise InvalidUpdateError("after its header an update stream carries only non-empty data chunks, then its trailer")

    def SubmitSmallUpdate(self, request: wire.SmallUpdateParts | wire.Malformed, context: grpc.ServicerContext) -> pb.UpdateAck:
        """A whole small update in one message (from `wire.read_small_update`: the data is a view of
        what grpc received): the same checks as a stream, parked in memory, no upload slot (it is
        already here)."""
        client_id, round_index = "", 0
        try:
            if isinstance(request, wire.Malformed):
                raise InvalidUpdateError(request.detail)
            head = request.header
            client_id, round_index = head.session.client_id, head.round
            client = self._client(head.protocol_version, head.session)
            header = checked_header(head, self.coordinator.config.num_classes)
            limit = self.coordinator.config.federation.inline_model_max_bytes
            if header.total_len > limit:
                raise InvalidUpdateError(f"an update of {header.total_len} bytes exceeds the {limit} bytes of "
                                         "SubmitSmallUpdate: stream it with SubmitUpdate")
            self.coordinator.check_update_header(client, header)
            with self.coordinator.incoming_update(header) as incoming:
                if len(request.data):
                    incoming.feed(request.data)
                self.coordinator.record_transfer(received=len(request.data))
                self.coordinator.submit_update(client, header, incoming.finish(trailer_digest(header, request.trailer)))
        except FedserError as exc:
            self._refuse(context, "SubmitUpdate", exc, client_id, round_index)
        return pb.UpdateAck(accepted=True, message="update accepted")

    @_mapped
    def SubmitEvaluation(self, request: pb.EvaluationReport, context: grpc.ServicerContext) -> pb.Ack:
        client = self._client(request.protocol_version, request.session)
        if request.num_classes != self.coordinator.config.num_classes:
            raise InvalidUpdateError(f"evaluation has {request.num_classes} classes, the run has {self.coordinator.config.num_classes}")
        if any(count > MAX_COUNT for count in request.confusion):
            raise InvalidUpdateError(f"confusion matrix holds a count above {MAX_COUNT}")
        check_loss("evaluation loss", request.loss)
        confusion = np.asarray(request.confusion, dtype=np.int64)
        self.coordinator.submit_evaluation(client, request.round, request.task_id, confusion, request.loss)
        return pb.Ack(message="evaluation accepted")

    @_mapped_on_loop
    async def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext) -> pb.HeartbeatReply:
        client = self._client(request.protocol_version, request.session)
        return pb.HeartbeatReply(round=self.coordinator.heartbeat(client),
                                 heartbeat_interval_s=self.coordinator.heartbeat_interval_s)

    @_mapped
    def Leave(self, request: pb.LeaveRequest, context: grpc.ServicerContext) -> pb.Ack:
        client = self._client(request.protocol_version, request.session)
        self.coordinator.leave(client, request.reason)
        return pb.Ack(message="goodbye")
