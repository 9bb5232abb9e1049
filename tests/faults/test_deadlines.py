"""Rounds never hang: deadlines, stragglers, clients that die mid-upload, bounded retries.

The server's clock is a `ManualClock`: a deadline passes when the test moves the clock past it,
never because the machine was slow."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from tests.faults import raw
from tests.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(120)
ROUND_TIMEOUT_S = 60.0  # of the manual clock


def _round_open(server, round_index: int, attempt: int = 0) -> bool:
    current = server.coordinator.published
    return current is not None and current.index == round_index and current.attempt == attempt and current.book.open


def test_a_straggler_is_refused_after_the_deadline_and_the_round_closes_without_it(tmp_path: Path) -> None:
    clock = ManualClock()
    server = raw.start(tmp_path, clock=clock, **{"federation.rounds": 2, "federation.min_clients": 2, "federation.min_updates": 1,
                                                 "federation.round_timeout_s": ROUND_TIMEOUT_S})
    channel, stub = raw.stub_for(server.port)
    try:
        fast, slow = raw.join(stub, "fast").session, raw.join(stub, "slow").session
        task_fast, task_slow = raw.wait_task(stub, fast), raw.wait_task(stub, slow)
        state = raw.fetch(stub, fast, task_fast)
        raw.fetch(stub, slow, task_slow)
        assert raw.submit(stub, raw.update_messages(fast, task_fast, raw.update_for(state, 0.01))).accepted
        assert server.coordinator.completed_round == 0, "the round waits for the slow client until its deadline"
        clock.advance(ROUND_TIMEOUT_S + 1)
        raw.wait_for(lambda: server.coordinator.completed_round == 1, what="round 1 to close on its deadline")
        code, details = raw.code_of(lambda: raw.submit(stub, raw.update_messages(slow, task_slow, raw.update_for(state, 5.0))))
        # the next round may or may not be published yet: either way the answer names round 1 as finished
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "round 1 is over" in details or "round 1 closed before this answer was accepted" in details
        assert server.coordinator.refusals["stale_round"] == 1
        np.testing.assert_allclose(server.coordinator.state["w.head.bias"], state["w.head.bias"] + 0.01, rtol=1e-6)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
    record = (tmp_path / "state" / "metrics.jsonl").read_text().splitlines()[0]
    assert '"n_sampled": 2' in record and '"n_updates": 1' in record


def test_a_third_of_the_clients_killed_mid_upload_the_round_closes_with_the_rest(tmp_path: Path, spawn) -> None:
    clock = ManualClock()
    server = raw.start(tmp_path, clock=clock, **{"federation.min_clients": 3, "federation.min_updates": 2,
                                                 "federation.round_timeout_s": ROUND_TIMEOUT_S})
    channel, stub = raw.stub_for(server.port)
    try:
        victim = spawn(["-m", "tests.faults.raw", "hang-mid-upload", f"127.0.0.1:{server.port}", "victim"], tmp_path / "victim.log")
        a, b = raw.join(stub, "a").session, raw.join(stub, "b").session
        task_a, task_b = raw.wait_task(stub, a), raw.wait_task(stub, b)
        state = raw.fetch(stub, a, task_a)
        raw.wait_for(lambda: "mid-upload" in (tmp_path / "victim.log").read_text(), what="the victim to start its upload")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        assert raw.submit(stub, raw.update_messages(a, task_a, raw.update_for(state, 0.01))).accepted
        assert raw.submit(stub, raw.update_messages(b, task_b, raw.update_for(state, 0.03))).accepted
        clock.advance(ROUND_TIMEOUT_S + 1)  # the victim never answers: the round closes at its deadline
        assert server.wait(timeout=30)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
    # the victim's half-sent bytes are not in the model: theta + mean(0.01, 0.03)
    np.testing.assert_allclose(server.coordinator.state["w.head.bias"], state["w.head.bias"] + 0.02, rtol=1e-5)
    assert server.coordinator.history[0]["n_sampled"] == 3 and server.coordinator.history[0]["n_updates"] == 2
    assert sum(server.coordinator.refusals.values()) == server.coordinator.refusals["cancelled"] + server.coordinator.refusals["stream_broken"] == 1  # cut off, not counted as a corrupt blob


def test_too_few_updates_retries_a_bounded_number_of_times_then_waits_for_clients(tmp_path: Path) -> None:
    clock = ManualClock()
    server = raw.start(tmp_path, clock=clock, **{"server.client_timeout_s": 10 * ROUND_TIMEOUT_S, "federation.min_clients": 2,
                                                 "federation.round_timeout_s": ROUND_TIMEOUT_S, "federation.max_round_retries": 1})
    channel, stub = raw.stub_for(server.port)
    try:
        silent = [raw.join(stub, name).session for name in ("mute1", "mute2")]
        for attempt in (0, 1):  # the first attempt and its one retry pass their deadlines unanswered
            raw.wait_for(lambda a=attempt: _round_open(server, 1, a), what=f"attempt {attempt} of round 1")
            clock.advance(ROUND_TIMEOUT_S + 1)
        raw.wait_for(lambda: server.loop.rounds_given_up == 1 and server.coordinator.waiting_for_clients,
                     what="the server to give up and wait")
        # the clients that never answered have lost their sessions: they count again only after a new join
        for session in silent:
            code, details = raw.code_of(lambda s=session: stub.GetTask(pb.GetTaskRequest(protocol_version=raw.V, session=s), timeout=5))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "did not answer" in details
        clock.advance(3 * ROUND_TIMEOUT_S)  # three more deadlines' worth of time: still waiting, no new attempt
        assert server.coordinator.waiting_for_clients and server.loop.rounds_given_up == 1
        assert server.coordinator.published is None or not server.coordinator.published.book.open
        assert server.coordinator.completed_round == 0
        back = [raw.join(stub, name, client_id=s.client_id).session for name, s in zip(("mute1", "mute2"), silent)]
        for session in back:
            task = raw.wait_task(stub, session)
            raw.answer(stub, session, task)
        assert server.wait(timeout=30)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
    assert server.coordinator.history[0]["attempts"] == 1  # the attempt count restarts after the wait
