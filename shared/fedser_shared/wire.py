"""The bulk messages (FetchModel's and SubmitUpdate's data, SubmitSmallUpdate) framed by hand, without protobuf objects.

A data message is `ModelChunk{data}` / `UpdateChunk{data}`: field 2 (length-delimited), a varint
length, the bytes. Built here, a chunk's bytes are copied once on the way out (into the message
grpc sends); read here, not at all on the way in (a memoryview of the message grpc received),
where a protobuf object costs a parse copy plus one per `.data` read. Header and trailer messages
still go through protobuf, and any data message a protobuf library writes is read correctly too.

A `SmallUpdate` (a whole small update in one message) is written as its header and trailer
through protobuf followed by the data field framed by hand (one copy of the tensors), and read
by walking its top-level fields: the data is a view of the received message, whatever the order
of the fields a sender wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb

_DATA_TAG = 0x12  # field 2, wire type 2
_MAX_VARINT_BYTES = 10
FETCH_MODEL = "/fedser.v1.Coordinator/FetchModel"
SUBMIT_UPDATE = "/fedser.v1.Coordinator/SubmitUpdate"
SUBMIT_SMALL_UPDATE = "/fedser.v1.Coordinator/SubmitSmallUpdate"
GET_TASK = "/fedser.v1.Coordinator/GetTask"
_LEN = 2  # protobuf wire type of bytes and messages


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited_field(number: int, payload: bytes) -> bytes:
    """A bytes or message field, serialised: appended to a serialised message, it sets that field."""
    return b"".join((_varint(number << 3 | _LEN), _varint(len(payload)), payload))


def data_message(*parts: bytes | memoryview) -> bytes:
    """One data message holding `parts` back to back: one copy of their bytes."""
    return b"".join((bytes((_DATA_TAG,)), _varint(sum(len(part) for part in parts)), *parts))


def _read_varint(raw: bytes | memoryview, position: int) -> tuple[int, int]:
    """The varint at `position` and the position after it; ValueError when it is cut or too long."""
    value = 0
    for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
        if position >= len(raw):
            raise ValueError("message ends inside a varint")
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
    raise ValueError("varint longer than 10 bytes")


@dataclass(frozen=True)
class _Field:
    number: int
    wire_type: int
    start: int                 # where its key begins in the message
    end: int                   # just past its value
    value: memoryview | None   # a length-delimited field's bytes (a view); None for other wire types


def _top_level(raw: bytes | memoryview) -> Iterator[_Field]:
    """The top-level fields of a serialised message, in order; ValueError on malformed bytes."""
    view, position = memoryview(raw), 0
    while position < len(view):
        start = position
        key, position = _read_varint(view, position)
        number, wire_type, value = key >> 3, key & 7, None
        if wire_type == 0:
            end = _read_varint(view, position)[1]
        elif wire_type in (1, 5):
            end = position + (8 if wire_type == 1 else 4)
        elif wire_type == _LEN:
            size, position = _read_varint(view, position)
            end = position + size
            value = view[position:end]
        else:
            raise ValueError(f"field {number} has unsupported wire type {wire_type}")
        if end > len(view):
            raise ValueError(f"field {number} runs past the end of the message")
        yield _Field(number, wire_type, start, end, value)
        position = end


def _fields(raw: bytes | memoryview) -> dict[int, memoryview]:
    """The length-delimited top-level fields of a message, by number, as views. Any other wire
    type, and a field that occurs twice, is refused."""
    fields: dict[int, memoryview] = {}
    for field in _top_level(raw):
        if field.value is None:
            raise ValueError(f"field {field.number} has wire type {field.wire_type}, expected length-delimited")
        if field.number in fields:
            raise ValueError(f"field {field.number} occurs twice")
        fields[field.number] = field.value
    return fields


@dataclass(frozen=True)
class ReceivedTask:
    """A Task as received: its small fields parsed; an inline model's data as a view of the
    received message (`model_data`), not copied into a protobuf object and out again."""

    task: pb.Task
    model_header: pb.BlobHeader | None = None
    model_data: memoryview | None = None


_TASK_MODEL = pb.Task.DESCRIPTOR.fields_by_name["model"].number


def read_task(raw: bytes) -> ReceivedTask:
    """GetTask's reply: the message without its `model` field parsed by protobuf, the model's
    header parsed, its data a view. Raises ValueError on bytes that are not a Task."""
    models = [f for f in _top_level(raw) if f.number == _TASK_MODEL and f.value is not None]
    if not models:
        return ReceivedTask(pb.Task.FromString(raw))
    if len(models) > 1:
        raise ValueError("a task holds its model twice")
    model, view = models[0], memoryview(raw)
    assert model.value is not None
    task = pb.Task.FromString(b"".join((view[: model.start], view[model.end :])))
    inline = _fields(model.value)
    return ReceivedTask(task, pb.BlobHeader.FromString(bytes(inline.get(1, b""))), inline.get(2, memoryview(b"")))


@dataclass(frozen=True)
class SmallUpdateParts:
    header: pb.UpdateHeader
    data: memoryview
    trailer: pb.BlobTrailer


@dataclass(frozen=True)
class Malformed:
    """What a reader returns for bytes it cannot parse (grpc would answer a failed read with
    INTERNAL; the handler answers INVALID_ARGUMENT with `detail`)."""

    detail: str


def read_small_update(raw: bytes) -> SmallUpdateParts | Malformed:
    """A SmallUpdate's header and trailer parsed, its data as a view (no copy)."""
    try:
        fields = _fields(raw)
        return SmallUpdateParts(header=pb.UpdateHeader.FromString(bytes(fields.get(1, b""))),
                                data=fields.get(2, memoryview(b"")),
                                trailer=pb.BlobTrailer.FromString(bytes(fields.get(3, b""))))
    except Exception as exc:  # noqa: BLE001 - malformed bytes of any kind
        return Malformed(f"malformed SmallUpdate message: {exc}")


def small_update_message(header: pb.UpdateHeader, trailer: pb.BlobTrailer, parts: Sequence[bytes | memoryview]) -> bytes:
    """A SmallUpdate whose data is `parts` back to back: one copy of their bytes."""
    envelope = pb.SmallUpdate(header=header, trailer=trailer).SerializeToString()
    return b"".join((envelope, bytes((_DATA_TAG,)), _varint(sum(len(part) for part in parts)), *parts))


def _data_view(raw: bytes) -> memoryview | None:
    """The data field of a message that holds that field alone, as a view; None for anything else."""
    if not raw or raw[0] != _DATA_TAG:
        return None
    try:
        size, start = _read_varint(raw, 1)
    except ValueError:
        return None
    return memoryview(raw)[start:] if start + size == len(raw) else None


def _reader(message_type: type[Message]) -> Callable[[bytes], Message | memoryview]:
    def read(raw: bytes) -> Message | memoryview:
        view = _data_view(raw)
        if view is not None:
            return view
        message = message_type.FromString(raw)
        return memoryview(message.data) if message.WhichOneof("payload") == "data" else message

    return read


read_update_chunk = _reader(pb.UpdateChunk)
read_model_chunk = _reader(pb.ModelChunk)


def serialize(message: Message | bytes) -> bytes:
    """A protobuf message, or a data message already framed by `data_message`."""
    return message if isinstance(message, bytes) else message.SerializeToString()


@dataclass(frozen=True)
class BulkCalls:
    """A client's FetchModel and SubmitUpdate with the framing above (the generated stub uses protobuf objects)."""

    fetch_model: grpc.UnaryStreamMultiCallable
    submit_update: grpc.StreamUnaryMultiCallable
    submit_small_update: grpc.UnaryUnaryMultiCallable
    get_task: grpc.UnaryUnaryMultiCallable  # replies are `ReceivedTask`s

    @classmethod
    def on(cls, channel: grpc.Channel) -> BulkCalls:
        return cls(
            channel.unary_stream(FETCH_MODEL, request_serializer=pb.FetchModelRequest.SerializeToString,
                                 response_deserializer=read_model_chunk),
            channel.stream_unary(SUBMIT_UPDATE, request_serializer=serialize, response_deserializer=pb.UpdateAck.FromString),
            channel.unary_unary(SUBMIT_SMALL_UPDATE, request_serializer=serialize, response_deserializer=pb.UpdateAck.FromString),
            channel.unary_unary(GET_TASK, request_serializer=pb.GetTaskRequest.SerializeToString, response_deserializer=read_task))
