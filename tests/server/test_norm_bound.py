"""Issue 14 §5: with federation.update_norm_max set, a poisoned update is refused (and counted)
or scaled down to the bound; without it every well-formed update counts as sent."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.faults import raw

pytestmark = pytest.mark.timeout(120)


def _run(tmp_path: Path, **overrides: object):
    server = raw.start(tmp_path, **overrides)
    channel, stub = raw.stub_for(server.port)
    session = raw.join(stub, "raw").session
    task = raw.wait_task(stub, session)
    return server, channel, stub, session, task, raw.fetch(stub, session, task)


def _moved(server, before: dict[str, np.ndarray]) -> float:
    state = server.coordinator.state
    return float(np.sqrt(sum(np.sum((state[n].astype(np.float64) - v) ** 2) for n, v in before.items())))


def test_an_update_above_the_bound_is_refused_and_counted(tmp_path: Path) -> None:
    server, channel, stub, session, task, state = _run(tmp_path, **{"federation.update_norm_max": 10.0})
    try:
        before = raw.snapshot(server)
        poisoned = raw.update_messages(session, task, raw.update_for(state, value=1e6))
        code, details = raw.code_of(lambda: raw.submit(stub, poisoned))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "exceeds the bound" in details
        assert raw.snapshot(server) == before
        assert server.coordinator.refusals["norm_bound"] == 1
        assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(state, value=1e-4))).accepted
        assert server.wait(timeout=30)
        assert _moved(server, state) < 10.0
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_clipping_moves_the_model_by_at_most_the_bound(tmp_path: Path) -> None:
    server, channel, stub, session, task, state = _run(tmp_path, **{"federation.update_norm_max": 2.0,
                                                                     "federation.update_norm_action": "clip"})
    try:
        assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(state, value=1e6))).accepted
        assert server.wait(timeout=30)
        assert _moved(server, state) == pytest.approx(2.0, rel=1e-3)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_by_default_a_1e6_valued_update_is_refused_and_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    server, channel, stub, session, task, state = _run(tmp_path)
    try:
        before = raw.snapshot(server)
        code, details = raw.code_of(lambda: raw.submit(stub, raw.update_messages(session, task, raw.update_for(state, 1e6))))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "update_norm_relative" in details
        assert raw.snapshot(server) == before and server.coordinator.refusals["norm_bound"] == 1
        assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(state))).accepted
        assert server.wait(timeout=30)
        assert _moved(server, state) < 10.0
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_without_a_bound_a_large_update_counts_in_full(tmp_path: Path) -> None:
    server, channel, stub, session, task, state = _run(tmp_path, **{"federation.update_norm_relative": 0})
    try:
        assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(state, value=1e3))).accepted
        assert server.wait(timeout=30)
        np.testing.assert_allclose(server.coordinator.state["w.head.bias"], state["w.head.bias"] + 1e3, rtol=1e-5)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
