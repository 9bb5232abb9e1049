"""The Coordinator gRPC servicer: unpack messages, check them at the edge, call the round engine.

GetTask, Heartbeat, SubmitSmallUpdate and the opening of an update stream (its header) are
coroutines on the server's event loop (a parked long-poll or a stream still waiting for its
header holds no thread); the rest blocks (disk, hashing, streaming) and runs on worker threads
(`threaded.ThreadContext` stands in for the sync API's context there). Every refusal goes
through `refusals.RefusalPath`; every check of a message is in `edge`."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager

import grpc
import numpy as np

from fedser_server.core.reports import UpdateHeader
from fedser_server.core.round_book import TaskAssignment, TaskKind
from fedser_server.engine.coordinator import Coordinator
from fedser_server.engine.secure_round import SecureRound
from fedser_server.engine.sessions import Session
from fedser_server.transport import edge
from fedser_server.transport.admission import HeaderGate, Limits, PollGate, UploadGate, UploadSlot
from fedser_server.transport.idle_polls import IdlePolls
from fedser_server.transport.long_poll import TaskPolls
from fedser_server.transport.refusals import Caller, RefusalPath, refusing, refusing_on_loop
from fedser_shared import PROTOCOL_VERSION, codec, wire
from fedser_shared.checksum import Checksum, Digest
from fedser_shared.errors import (
    ClientCancelledError,
    CorruptBlobError,
    DiskFullError,
    FedserError,
    InvalidUpdateError,
    MalformedShareError,
    MaskedInputError,
    SmallUpdateTooLargeError,
    StaleRoundError,
)
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc
from fedser_shared.refusal import UPLOAD_GRANTED_METADATA
from fedser_shared.secagg import EncryptedShare, KeyAdvert, UnmaskReply

_TASK_KIND = {
    TaskKind.WAIT: pb.TASK_KIND_WAIT,
    TaskKind.TRAIN: pb.TASK_KIND_TRAIN,
    TaskKind.EVALUATE: pb.TASK_KIND_EVALUATE,
    TaskKind.SHUTDOWN: pb.TASK_KIND_SHUTDOWN,
}


def task_message(task: TaskAssignment) -> pb.Task:
    return pb.Task(
        kind=_TASK_KIND[task.kind], round=task.round, task_id=task.task_id,
        train=pb.TrainSpec(lr=task.lr, local_epochs=task.local_epochs,
                           pseudo_label_threshold=task.pseudo_threshold, participation=task.participation,
                           dp_clip_norm=task.dp_clip_norm, dp_noise_std=task.dp_noise_std),
        deadline_unix_s=task.deadline_unix_s, retry_after_s=task.retry_after_s)


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


@dataclasses.dataclass(frozen=True, slots=True)
class PollRequest:
    """GetTask's request as a parked poll keeps it: the fields it uses, not the protobuf message
    (~570 bytes more per parked poll, 10,000 of them parked at once)."""

    protocol_version: int
    client_id: str
    session_token: str
    sha256_too: bool  # the client needs the model's SHA-256 (it did not list XXH3)

    @classmethod
    def read(cls, raw: bytes) -> PollRequest:
        request = pb.GetTaskRequest.FromString(raw)
        return cls(request.protocol_version, request.session.client_id, request.session.session_token,
                   wants_sha256(request.checksums))


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
    (one copy of the model per client, where a `Task` holding the model costs two). Each blob
    goes inline up to a byte budget (`federation.inline_models_per_round_max_bytes`); past it,
    tasks go without the model and their clients fetch it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inline_bytes = 0  # of the current blob, sent inline so far
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
                self._inline_bytes = 0
            return self._message

    def field_of(self, blob: codec.Blob, sha256_too: bool, budget_bytes: int) -> bytes:
        """`Task.model` holding `blob`, serialised as a field to append to a serialised Task; b""
        once the blob's inline copies would pass `budget_bytes`."""
        message = self.of(blob)
        with self._lock:
            if self._blob is not blob or self._inline_bytes + blob.total_len > budget_bytes:
                return b""
            self._inline_bytes += blob.total_len
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
def _cut_off_when_closed(coordinator: Coordinator, opened: OpenedUpdate, context: grpc.ServicerContext,
                         messages: Iterator[pb.UpdateChunk | memoryview]) -> Iterator[Iterator[pb.UpdateChunk | memoryview]]:
    """Once its task closes (the round's deadline on the run's clock, or the run's end) an upload is
    refused anyway: a client that stalls mid-stream then (suspended, wedged link) is cut off and
    refused as stale, so that it cannot keep an upload slot. Yields `messages`; a stream read to its
    end is never cut: its update is accepted or refused on its merits."""
    read, closed = threading.Event(), threading.Event()
    header = opened.header

    def reading() -> Iterator[pb.UpdateChunk | memoryview]:
        try:
            yield from messages
        except grpc.RpcError:
            if closed.is_set():
                raise StaleRoundError(f"round {header.round} closed while the update was streaming") from None
            raise
        read.set()

    def watch() -> None:
        if coordinator.wait_while_open(opened.client, header.round, header.task_id, unless=read):
            closed.set()
            context.cancel()

    threading.Thread(target=watch, name="fedser-upload-cutoff", daemon=True).start()
    try:
        yield reading()
    finally:
        read.set()


@dataclasses.dataclass(frozen=True)
class OpenedUpdate:
    """An update stream whose header passed the edge: who sends it, for which open task, in which upload slot."""

    caller: Caller
    client: Session
    header: UpdateHeader
    task: TaskAssignment
    slot: UploadSlot


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    def __init__(self, coordinator: Coordinator, poll_timeout_s: float, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        self.coordinator = coordinator
        self.poll_timeout_s = poll_timeout_s
        self.limits = limits
        self.refusals = RefusalPath(coordinator.count_refusal)
        self._inline_model = _InlineModel()
        self._polls = PollGate(limits.parked_polls_cap)
        idle_poll_s = coordinator.config.federation.idle_poll_s
        self._idle = IdlePolls(idle_poll_s, coordinator.clock) if idle_poll_s is not None else None
        self._uploads = UploadGate(limits.uploads)
        self._headers = HeaderGate(limits.unauthenticated_streams, limits.header_timeout_s, coordinator.clock)
        self._polls_on_loop: TaskPolls | None = None  # made on the server's event loop, at the first poll

    @property
    def parked_polls(self) -> int:
        """GetTask polls held on the server now."""
        return self._polls.parked

    @property
    def waiting_for_header(self) -> int:
        """Update streams open and not yet past their header (they hold no worker thread)."""
        return self._headers.waiting

    def _client(self, version: int, session: pb.Session) -> Session:
        edge.check_protocol(version)
        return self.coordinator.authenticate(session.client_id, session.session_token)

    async def Describe(self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext) -> pb.ServerInfo:
        """On the event loop (nothing here blocks): what a client must know before it joins."""
        config = self.coordinator.config
        return pb.ServerInfo(
            protocol_version=PROTOCOL_VERSION, feature_name=config.features.name, feature_dim=self.coordinator.feature_dim,
            num_classes=config.num_classes, class_names=config.labels.class_names, total_rounds=config.federation.rounds,
            algorithm=config.federation.algorithm, update_checksums=sorted(edge.CHECKSUM_OF),
            inline_model_max_bytes=config.federation.inline_model_max_bytes,
            enrolment_tokens=self.coordinator.tokens is not None, header_timeout_s=self.limits.header_timeout_s,
            secure_aggregation=config.privacy.secure_aggregation)

    @refusing
    def Join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinReply:
        edge.check_protocol(request.protocol_version)
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

    @refusing_on_loop
    async def GetTask(self, request: PollRequest, context: grpc.aio.ServicerContext) -> pb.Task | bytes:
        """On the event loop: a parked poll is a coroutine waiting for the coordinator to post tasks;
        in idle polling (`federation.idle_poll_s`) a poll with nothing for its client is answered at
        once with a come-back time instead. The task is serialised by hand when it carries the model
        inline (see `_InlineModel`)."""
        edge.check_protocol(request.protocol_version)
        client = self.coordinator.authenticate(request.client_id, request.session_token)
        if self._idle is not None and self._idle.answers_at_once(client.client_id):
            task = self.coordinator.next_task(client)
            if task.kind is TaskKind.WAIT:
                task = dataclasses.replace(task, retry_after_s=self._idle.come_back_in(client.client_id))
        else:
            task = await self._parked_task(client, context)
        message = task_message(task)
        model = (self._inline_model_field(client, task, request.sha256_too)
                 if task.kind in (TaskKind.TRAIN, TaskKind.EVALUATE) else b"")
        return message.SerializeToString() + model if model else message

    async def _parked_task(self, client: Session, context: grpc.aio.ServicerContext) -> TaskAssignment:
        """The long-poll: held until the client has a task or the poll's time is up; answered at once
        with a come-back time when the server holds as many polls as it may."""
        parked = self._polls.try_park()
        try:
            remaining = context.time_remaining()
            timeout = self.poll_timeout_s if remaining is None else max(0.0, min(self.poll_timeout_s, remaining - 1.0))
            task = await self._task_polls().next_task(client, timeout if parked else 0.0)
        finally:
            if parked:
                self._polls.unpark()
        if not parked and task.kind is TaskKind.WAIT:
            retry = self._polls.retry_after_s(len(self.coordinator.registry.clients), self.poll_timeout_s)
            task = dataclasses.replace(task, retry_after_s=retry)
        return task

    def _task_polls(self) -> TaskPolls:
        if self._polls_on_loop is None:
            self._polls_on_loop = TaskPolls(self.coordinator, asyncio.get_running_loop())
        return self._polls_on_loop

    def _inline_model_field(self, client: Session, task: TaskAssignment, sha256_too: bool) -> bytes:
        """A small global state to put into the task itself, so the client needs no FetchModel; b"" otherwise
        (a larger state, or the round's inline budget spent)."""
        try:
            blob = self.coordinator.model_blob(client, task.round, task.task_id)
        except FedserError:
            return b""  # the round closed meanwhile: the client's FetchModel hears why
        federation = self.coordinator.config.federation
        if blob.total_len > federation.inline_model_max_bytes:
            return b""
        field = self._inline_model.field_of(blob, sha256_too, federation.inline_models_per_round_max_bytes)
        if field:
            self.coordinator.record_transfer(sent=blob.total_len)
        return field

    def FetchModel(self, request: pb.FetchModelRequest, context: grpc.ServicerContext) -> Iterator[pb.ModelChunk | bytes]:
        with self.refusals.guard(context, Caller.of("FetchModel", request)):
            client = self._client(request.protocol_version, request.session)
            blob = self.coordinator.model_blob(client, request.round, request.task_id)
        yield from model_messages(blob, wants_sha256(request.checksums))
        self.coordinator.record_transfer(sent=blob.total_len)

    # ------------------------------------------------------------------ SubmitUpdate
    async def open_update(self, requests: AsyncIterator[pb.UpdateChunk | memoryview],
                          context: grpc.aio.ServicerContext) -> OpenedUpdate:
        """SubmitUpdate's first step, on the event loop: the stream's header, within the header
        limit and among a bounded number of streams still waiting for theirs, authenticated and
        checked, and an upload slot taken (or the stream refused at once: it is never parked). A
        stream holds a worker thread only after this.

        The call's initial metadata goes out the moment the slot is taken: a client that waits for
        it before sending its data has sent only its header when it is refused, so that the
        server's stream windows can be large (BDP probing) without refused uploads pushing
        megabytes into its receive buffers. A client that streams at once is served the same."""
        caller = Caller("SubmitUpdate")
        async with self.refusals.guard_on_loop(context, caller):
            first = await self._headers.first_message(requests)
            opened = self._opened(caller, first)
        try:
            await context.send_initial_metadata(UPLOAD_GRANTED_METADATA)
        except BaseException:
            opened.slot.release()
            raise
        return opened

    def _opened(self, caller: Caller, first: pb.UpdateChunk | memoryview | None) -> OpenedUpdate:
        if not isinstance(first, pb.UpdateChunk) or first.WhichOneof("payload") != "header":
            raise InvalidUpdateError("the first message of an update stream must be its header")
        head = first.header
        caller.client_id, caller.round = head.session.client_id[:64], head.round
        client = self._client(head.protocol_version, head.session)
        header = self._checked_header(head, client)
        task = self.coordinator.training_task(client, header.round, header.task_id)
        return OpenedUpdate(caller, client, header, task, self._uploads.take(client.client_id))

    def _checked_header(self, head: pb.UpdateHeader, client: Session) -> UpdateHeader:
        return edge.update_header(head, client.record, self.coordinator.config.num_classes, self.coordinator.max_update_bytes)

    def receive_update(self, opened: OpenedUpdate, messages: Iterator[pb.UpdateChunk | memoryview],
                       context: grpc.ServicerContext) -> pb.UpdateAck:
        """SubmitUpdate's second step, on a worker thread: the data and the trailer. Messages come
        from `wire.read_update_chunk`: data chunks as memoryviews, the rest as protobuf."""
        client, header = opened.client, opened.header
        with self.refusals.guard(context, opened.caller):
            with opened.slot, _cut_off_when_closed(self.coordinator, opened, context, messages) as cut:
                try:
                    self._receive_update(client, header, cut)
                except _EndedEarly:
                    if _went_away(context):
                        # a stream cut short because the client cancelled (or died) is not a corrupt blob
                        raise ClientCancelledError("the client cancelled the upload") from None
                    raise
                except DiskFullError:
                    self.coordinator.disk_full()
                    raise
        if header.total_len > self.coordinator.config.federation.inline_model_max_bytes:  # it was parked on disk
            self.coordinator.disk_has_room()
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

    async def SubmitSmallUpdate(self, request: wire.SmallUpdateParts | wire.Malformed,
                                context: grpc.aio.ServicerContext) -> pb.UpdateAck:
        """A whole small update in one message (from `wire.read_small_update`: the data is a view of
        what grpc received): the same checks as a stream, parked in memory, no upload slot (it is
        already here). On the event loop: checking a small update costs less than handing it to a
        worker thread and back (1.4 ms of server CPU per update at 100 clients, benchmarks/results/vs_flower.md);
        it waits, as on a thread, only for the aggregator's backlog and the previous round's checkpoint."""
        caller = Caller("SubmitSmallUpdate")
        async with self.refusals.guard_on_loop(context, caller):
            self._take_small_update(request, caller)
        return pb.UpdateAck(accepted=True, message="update accepted")

    def _take_small_update(self, request: wire.SmallUpdateParts | wire.Malformed, caller: Caller) -> None:
        if isinstance(request, wire.Malformed):
            raise InvalidUpdateError(request.detail)
        head = request.header
        caller.client_id, caller.round = head.session.client_id[:64], head.round
        client = self._client(head.protocol_version, head.session)
        header = self._checked_header(head, client)
        limit = self.coordinator.config.federation.inline_model_max_bytes
        if header.total_len > limit:
            raise SmallUpdateTooLargeError(f"an update of {header.total_len} bytes exceeds the {limit} bytes of "
                                           "SubmitSmallUpdate: stream it with SubmitUpdate")
        self.coordinator.training_task(client, header.round, header.task_id)
        with self.coordinator.incoming_update(header) as incoming:
            if len(request.data):
                incoming.feed(request.data)
            self.coordinator.record_transfer(received=len(request.data))
            self.coordinator.submit_update(client, header, incoming.finish(trailer_digest(header, request.trailer)))

    @refusing
    def SubmitEvaluation(self, request: pb.EvaluationReport, context: grpc.ServicerContext) -> pb.Ack:
        client = self._client(request.protocol_version, request.session)
        self.coordinator.submit_evaluation(client, edge.evaluation(request, client.record, self.coordinator.config.num_classes))
        return pb.Ack(message="evaluation accepted")

    @refusing_on_loop
    async def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext) -> pb.HeartbeatReply:
        client = self._client(request.protocol_version, request.session)
        return pb.HeartbeatReply(round=self.coordinator.heartbeat(client),
                                 heartbeat_interval_s=self.coordinator.heartbeat_interval_s)

    @refusing
    def Leave(self, request: pb.LeaveRequest, context: grpc.ServicerContext) -> pb.Ack:
        client = self._client(request.protocol_version, request.session)
        self.coordinator.leave(client, request.reason)
        return pb.Ack(message="goodbye")

    # ---------------------------------------------------------------- secure aggregation (docs/protocol.md)
    def _secure_round(self, client: Session, round_index: int, task_id: str) -> SecureRound:
        return self.coordinator.secure_round_for(client, round_index, task_id)

    def _secagg_wait_s(self) -> float:
        """How long a stage call may wait for its stage to close (the client's own deadline may cut it first)."""
        config = self.coordinator.config
        return config.federation.round_timeout_s + config.privacy.secagg_stage_timeout_s

    @refusing
    def SecAggAdvertise(self, request: pb.SecAggAdvertiseRequest, context: grpc.ServicerContext) -> pb.SecAggPeers:
        client = self._client(request.protocol_version, request.session)
        secure = self._secure_round(client, request.round, request.task_id)
        keys = secure.advertise(client.client_id, request.round, request.task_id,
                                KeyAdvert(request.share_key, request.mask_key), self._secagg_wait_s(),
                                joined=lambda: self.coordinator.secure_round_joined(client))
        return pb.SecAggPeers(node=keys.node, threshold=keys.threshold, context=keys.context, n_clients=keys.n_clients,
                              vector_length=keys.vector_length,
                              peers=[pb.SecAggPeerKey(node=n, share_key=a.share_key, mask_key=a.mask_key)
                                     for n, a in sorted(keys.peers.items())])

    @refusing
    def SecAggShare(self, request: pb.SecAggShareRequest, context: grpc.ServicerContext) -> pb.SecAggSharesForYou:
        client = self._client(request.protocol_version, request.session)
        secure = self._secure_round(client, request.round, request.task_id)
        shares = [EncryptedShare(s.sender, s.recipient, s.ciphertext) for s in request.shares]
        mine = secure.share(client.client_id, request.round, request.task_id, shares, self._secagg_wait_s())
        return pb.SecAggSharesForYou(shares=[pb.SecAggShare(sender=s.sender, recipient=s.recipient, ciphertext=s.ciphertext)
                                             for s in mine])

    @refusing
    def SecAggMask(self, request: pb.SecAggMaskRequest, context: grpc.ServicerContext) -> pb.SecAggUnmaskTask:
        client = self._client(request.protocol_version, request.session)
        secure = self._secure_round(client, request.round, request.task_id)
        if len(request.masked) != 4 * secure.layout.length:
            raise MaskedInputError(f"a masked input is {4 * secure.layout.length} bytes ({secure.layout.length} uint32), "
                                   f"got {len(request.masked)}")
        masked = np.frombuffer(request.masked, dtype="<u4").astype(np.uint32, copy=False)  # a view of the message: no copy
        ask = secure.mask(client.client_id, request.round, request.task_id, masked, self._secagg_wait_s())
        return pb.SecAggUnmaskTask(seed_of=sorted(ask.seed_of), key_of=sorted(ask.key_of))

    @refusing
    def SecAggUnmask(self, request: pb.SecAggUnmaskShares, context: grpc.ServicerContext) -> pb.Ack:
        client = self._client(request.protocol_version, request.session)
        secure = self._secure_round(client, request.round, request.task_id)
        seeds, keys = {s.node: s.share for s in request.seed_shares}, {s.node: s.share for s in request.key_shares}
        if len(seeds) != len(request.seed_shares) or len(keys) != len(request.key_shares):
            raise MalformedShareError("a node's share is listed twice")
        secure.unmask(client.client_id, request.round, request.task_id, UnmaskReply(seeds, keys))
        return pb.Ack(message="shares accepted")
