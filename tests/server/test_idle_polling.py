"""Idle polling (`federation.idle_poll_s`): a client with nothing to do hears WAIT at once with a
come-back time and holds nothing on the server meanwhile; its session outlives the gaps; when it
is sampled it hears its task at its next poll; a client that ignores the time is long-polled."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fedser_server.app import RunningServer, serve_until_done
from fedser_shared.config import load_run_config
from fedser_shared.errors import ConfigError
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc
from tests.faults import raw
from tests.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(120)

IDLE_S = 30.0
# a held poll would last this long (real time): an answer within a call of 10 s was not held
HELD_S = 600.0
# the one test on real time (the server's grace period after the run): come-back times of 6-10 s, and the
# client back at 0.6 of its time (past the half that counts as early), so that it is back >= 4 s before the
# server's wait for it ends
IDLE_S_REAL = 8.0
BACK_AT = 0.6


def _poll(stub: pb_grpc.CoordinatorStub, session: pb.Session) -> pb.Task:
    return stub.GetTask(pb.GetTaskRequest(protocol_version=raw.V, session=session), timeout=10)


@contextmanager
def _serving(tmp_path: Path, clock: ManualClock | None = None,
             **overrides: object) -> Iterator[tuple[RunningServer, pb_grpc.CoordinatorStub]]:
    """An idle-polling server (the round needs two clients: one joined client has nothing to do) and a stub on it."""
    settings: dict[str, object] = {"federation.min_clients": 2, "federation.poll_timeout_s": HELD_S,
                                   "federation.idle_poll_s": IDLE_S}
    settings.update(overrides)
    server = raw.start(tmp_path, clock=clock or time.monotonic, **settings)
    channel, stub = raw.stub_for(server.port)
    try:
        yield server, stub
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_an_idle_client_hears_wait_at_once_and_its_session_outlives_many_gaps(tmp_path: Path) -> None:
    clock = ManualClock()
    with _serving(tmp_path, clock) as (server, stub):
        session = raw.join(stub, "idle").session
        waits = []
        for _ in range(10):  # 10 come-back times, ~300 s of the run's clock: well past the 120 s client timeout
            task = _poll(stub, session)
            assert task.kind == pb.TASK_KIND_WAIT
            waits.append(task.retry_after_s)
            clock.advance(task.retry_after_s)
        assert all(0.75 * IDLE_S <= wait <= 1.25 * IDLE_S for wait in waits), waits
        assert len(set(waits)) > 1, "come-back times are jittered"
        assert sum(waits) > server.coordinator.client_timeout_s
        assert [r.name for r in server.coordinator.alive_clients()] == ["idle"]


def test_a_sampled_idle_client_hears_its_task_at_its_next_poll_and_the_run_completes(tmp_path: Path) -> None:
    clock = ManualClock()
    with _serving(tmp_path, clock) as (server, stub):
        first = raw.join(stub, "first").session
        away = _poll(stub, first)
        assert away.kind == pb.TASK_KIND_WAIT and away.retry_after_s > 0
        second = raw.join(stub, "second").session
        raw.wait_for(lambda: server.coordinator.published is not None, what="round 1 to open")
        clock.advance(away.retry_after_s)
        for session in (first, second):
            task = _poll(stub, session)
            assert (task.kind, task.round) == (pb.TASK_KIND_TRAIN, 1)
            assert raw.answer(stub, session, task).accepted
        assert server.wait(timeout=60), "the round did not finish"
        assert _poll(stub, first).kind == pb.TASK_KIND_SHUTDOWN


@pytest.mark.parametrize("idle_poll_s", [IDLE_S, None], ids=["idle-client-ignoring-the-time", "long-poll-default"])
def test_a_poll_that_does_not_wait_its_time_is_held_until_its_task_comes(tmp_path: Path, idle_poll_s: float | None) -> None:
    """A client that ignores the come-back time (or any client of a server without idle polling)
    is long-polled: its poll waits on the server and hears the task the moment the round opens."""
    clock = ManualClock()
    answers: list[pb.Task] = []
    with _serving(tmp_path, clock, **{"federation.idle_poll_s": idle_poll_s}) as (server, stub):
        first = raw.join(stub, "eager").session
        if idle_poll_s is not None:
            assert _poll(stub, first).retry_after_s > 0  # answered at once ...
        held = threading.Thread(target=lambda: answers.append(_poll(stub, first)), daemon=True)
        held.start()  # ... and asked again at once: held
        raw.wait_for(lambda: server.bound.servicer.parked_polls == 1, within_s=30, what="the poll to be held")
        assert not answers
        raw.join(stub, "second")
        held.join(timeout=30)
        assert [(t.kind, t.round) for t in answers] == [(pb.TASK_KIND_TRAIN, 1)]


def test_an_idle_interval_that_would_let_sessions_expire_is_refused_naming_both_settings() -> None:
    with pytest.raises(ConfigError) as refused:
        load_run_config(None, {"federation.idle_poll_s": 60.0, "server.client_timeout_s": 120.0})
    message = str(refused.value)
    assert "federation.idle_poll_s" in message and "server.client_timeout_s" in message and "\n" not in message.strip()
    assert load_run_config(None, {"federation.idle_poll_s": 48.0, "server.client_timeout_s": 120.0}).federation.idle_poll_s == 48.0


def test_a_client_away_when_the_run_ends_still_hears_shutdown_when_it_comes_back(tmp_path: Path) -> None:
    """The server waits out the longest come-back time for SHUTDOWN (real time: a grace period of the process)."""
    with _serving(tmp_path, **{"federation.idle_poll_s": IDLE_S_REAL}) as (server, stub):
        early, late = raw.join(stub, "early").session, raw.join(stub, "late").session
        raw.wait_for(lambda: server.coordinator.published is not None, what="round 1 to open")
        early_task, late_task = _poll(stub, early), _poll(stub, late)
        assert raw.answer(stub, early, early_task).accepted
        away = _poll(stub, early)  # the round waits for "late": "early" goes away
        assert away.kind == pb.TASK_KIND_WAIT and away.retry_after_s > 0
        assert raw.answer(stub, late, late_task).accepted
        assert server.wait(timeout=60), "the run did not finish"
        ending = threading.Thread(target=serve_until_done, args=(server, 0.2), daemon=True)
        ending.start()
        assert _poll(stub, late).kind == pb.TASK_KIND_SHUTDOWN
        threading.Event().wait(away.retry_after_s * BACK_AT)
        assert _poll(stub, early).kind == pb.TASK_KIND_SHUTDOWN
        ending.join(timeout=30)
        assert not ending.is_alive()
