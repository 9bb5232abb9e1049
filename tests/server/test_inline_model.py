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
