"""The hand-framed data messages of the bulk streams are plain protobuf on the wire."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedser_shared import wire
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=4), st.sampled_from([0, 1, 127, 128, 16383, 16384, 70000]))
def test_a_framed_data_message_is_what_protobuf_writes_and_reads(parts: list[bytes], padding: int) -> None:
    parts = [*parts, b"x" * padding]
    raw = wire.data_message(*(memoryview(p) for p in parts))
    assert raw == pb.UpdateChunk(data=b"".join(parts)).SerializeToString()
    assert pb.ModelChunk.FromString(raw).data == b"".join(parts)
    view = wire.read_update_chunk(raw)
    assert isinstance(view, memoryview) and view == b"".join(parts)


def test_reading_a_data_message_copies_nothing() -> None:
    raw = wire.data_message(b"\x01" * 4096)
    view = wire.read_model_chunk(raw)
    assert np.shares_memory(np.frombuffer(view, np.uint8), np.frombuffer(raw, np.uint8))


def test_headers_trailers_and_unusual_encodings_go_through_protobuf() -> None:
    header = pb.UpdateChunk(header=pb.UpdateHeader(round=3, n_samples=7))
    trailer = pb.UpdateChunk(trailer=pb.BlobTrailer(sha256=b"\x12" * 32))
    assert wire.read_update_chunk(header.SerializeToString()) == header
    assert wire.read_update_chunk(trailer.SerializeToString()) == trailer
    assert wire.read_update_chunk(b"") == pb.UpdateChunk()
    # a data field followed by another one: protobuf keeps the last of a oneof, and so does the reader
    both = wire.data_message(b"abc") + trailer.SerializeToString()
    assert wire.read_update_chunk(both) == trailer
    # a data field written twice: the last one counts
    twice = wire.data_message(b"first") + wire.data_message(b"second")
    assert bytes(wire.read_update_chunk(twice)) == b"second"
    assert bytes(wire.read_update_chunk(wire.data_message())) == b""


def test_serialize_passes_framed_messages_through() -> None:
    framed = wire.data_message(b"abc")
    assert wire.serialize(framed) is framed
    assert wire.serialize(pb.ModelChunk(header=pb.BlobHeader(total_len=5))) == pb.ModelChunk(
        header=pb.BlobHeader(total_len=5)).SerializeToString()


def test_a_task_reads_the_same_with_its_model_as_a_view_whatever_the_field_order() -> None:
    model = pb.InlineBlob(header=pb.BlobHeader(total_len=3, xxh3_128=b"x" * 16), data=b"abc")
    task = pb.Task(kind=pb.TASK_KIND_TRAIN, round=3, task_id="t1", train=pb.TrainSpec(lr=0.1, local_epochs=2),
                   deadline_unix_s=5.5, model=model)
    model_first = pb.Task(model=model).SerializeToString() + pb.Task(
        kind=pb.TASK_KIND_TRAIN, round=3, task_id="t1", train=pb.TrainSpec(lr=0.1, local_epochs=2),
        deadline_unix_s=5.5).SerializeToString()
    for raw in (task.SerializeToString(), model_first):
        received = wire.read_task(raw)
        expected = pb.Task()
        expected.CopyFrom(task)
        expected.ClearField("model")
        assert received.task == expected
        assert received.model_header == model.header and isinstance(received.model_data, memoryview)
        assert bytes(received.model_data) == b"abc"
    without = wire.read_task(pb.Task(kind=pb.TASK_KIND_WAIT, retry_after_s=2.0).SerializeToString())
    assert without.task.retry_after_s == 2.0 and without.model_data is None and without.model_header is None


def test_bytes_that_are_not_a_task_or_a_small_update_are_refused() -> None:
    with pytest.raises(ValueError):
        wire.read_task(b"\x3a\x10abc")  # the model field claims 16 bytes, 3 follow
    twice = pb.Task(model=pb.InlineBlob(data=b"a")).SerializeToString() * 2
    with pytest.raises(ValueError, match="twice"):
        wire.read_task(twice)
    assert isinstance(wire.read_small_update(b"\x0a\x05ab"), wire.Malformed)
