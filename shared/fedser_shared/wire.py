"""The bulk streams' data messages (FetchModel, SubmitUpdate) framed by hand, without protobuf objects.

A data message is `ModelChunk{data}` / `UpdateChunk{data}`: field 2 (length-delimited), a varint
length, the bytes. Built here, a chunk's bytes are copied once on the way out (into the message
grpc sends); read here, not at all on the way in (a memoryview of the message grpc received),
where a protobuf object costs a parse copy plus one per `.data` read. Header and trailer messages
still go through protobuf, and any data message a protobuf library writes is read correctly too.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb

_DATA_TAG = 0x12  # field 2, wire type 2
_MAX_VARINT_BYTES = 10
FETCH_MODEL = "/fedser.v1.Coordinator/FetchModel"
SUBMIT_UPDATE = "/fedser.v1.Coordinator/SubmitUpdate"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def data_message(*parts: bytes | memoryview) -> bytes:
    """One data message holding `parts` back to back: one copy of their bytes."""
    return b"".join((bytes((_DATA_TAG,)), _varint(sum(len(part) for part in parts)), *parts))


def _data_view(raw: bytes) -> memoryview | None:
    """The data field of a message that holds that field alone, as a view; None for anything else."""
    if not raw or raw[0] != _DATA_TAG:
        return None
    size, shift = 0, 0
    for position in range(1, min(len(raw), 1 + _MAX_VARINT_BYTES)):
        byte = raw[position]
        size |= (byte & 0x7F) << shift
        if not byte & 0x80:
            start = position + 1
            return memoryview(raw)[start:] if start + size == len(raw) else None
        shift += 7
    return None


def _reader(message_type: type[Message]):
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

    @classmethod
    def on(cls, channel: grpc.Channel) -> "BulkCalls":
        return cls(
            channel.unary_stream(FETCH_MODEL, request_serializer=pb.FetchModelRequest.SerializeToString,
                                 response_deserializer=read_model_chunk),
            channel.stream_unary(SUBMIT_UPDATE, request_serializer=serialize, response_deserializer=pb.UpdateAck.FromString))
