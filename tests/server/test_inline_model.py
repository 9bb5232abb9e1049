"""A small global model travels inside the TRAIN task (no FetchModel); a large one is streamed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedser_shared import codec
from tests.faults import raw

pytestmark = pytest.mark.timeout(120)


def _first_task(tmp_path: Path, **overrides: object):
    server = raw.start(tmp_path, **overrides)
    channel, stub = raw.stub_for(server.port)
    session = raw.join(stub).session
    return server, channel, stub, session, raw.wait_task(stub, session)


def test_a_small_model_comes_inline_with_the_task_and_equals_the_streamed_one(tmp_path: Path) -> None:
    server, channel, stub, session, task = _first_task(tmp_path)
    try:
        assert task.HasField("model")
        inline = codec.decode(codec.assemble(iter([task.model.data]), task.model.header.total_len, task.model.header.sha256))
        streamed = raw.fetch(stub, session, task)  # FetchModel still serves clients that do not read it
        assert inline.keys() == streamed.keys() == server.coordinator.state.keys()
        for name, value in server.coordinator.state.items():
            np.testing.assert_array_equal(inline[name], value)
        assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(inline))).accepted
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_a_model_above_the_inline_limit_is_left_to_fetch_model(tmp_path: Path) -> None:
    server, channel, stub, session, task = _first_task(tmp_path, **{"federation.inline_model_max_bytes": 1024})
    try:
        assert not task.HasField("model")
        state = raw.fetch(stub, session, task)
        assert state.keys() == server.coordinator.state.keys()
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_the_largest_default_inline_task_fits_a_4_mib_receive_limit() -> None:
    """grpc-js (and grpc-java, grpc-go) receive at most 4 MiB by default: the biggest task the
    default settings inline must fit, every other field at its largest."""
    from fedser_server.engine.coordinator import TaskAssignment, TaskKind
    from fedser_server.transport.servicer import task_message
    from fedser_shared.config import FederationConfig
    from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb

    limit = FederationConfig().inline_model_max_bytes
    task = task_message(TaskAssignment(TaskKind.TRAIN, round=2**32 - 1, task_id="f" * 12, lr=1e-3, local_epochs=2**32 - 1,
                                       pseudo_threshold=0.9, participation=2**32 - 1, deadline_unix_s=4e9, retry_after_s=1e9))
    task.model.CopyFrom(pb.InlineBlob(header=pb.BlobHeader(total_len=limit, sha256=b"\xff" * 32), data=b"\0" * limit))
    assert task.ByteSize() <= 4 * 2**20
