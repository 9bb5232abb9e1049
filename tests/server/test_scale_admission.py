"""A small thread pool stays usable: long-polls and uploads beyond their caps do not starve it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from fedser_server import app as server_app
from fedser_server.transport.admission import Limits, UploadGate, UploadSlotsBusyError
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.refusal import refusal_of
from tests.faults import raw
from tests.manual_clock import ManualClock

POLLERS = 7


def _client(port: int, name: str, told_to_wait: threading.Event, results: dict[str, list[int]]) -> None:
    channel, stub = raw.stub_for(port)
    try:
        session = raw.join(stub, name).session
        rounds: list[int] = []
        while True:
            task = stub.GetTask(pb.GetTaskRequest(protocol_version=raw.V, session=session), timeout=30)
            if task.kind == pb.TASK_KIND_SHUTDOWN:
                results[name] = rounds
                return
            if task.kind == pb.TASK_KIND_TRAIN:
                state = raw.fetch(stub, session, task)
                code, _ = raw.code_of(lambda: raw.submit(stub, raw.update_messages(session, task, raw.update_for(state))))
                if code == grpc.StatusCode.OK:
                    rounds.append(task.round)
                else:  # busy: the daemon backs off and asks again, the task is still its own
                    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, code
                    time.sleep(0.2)
            elif task.retry_after_s > 0:
                told_to_wait.set()
                time.sleep(min(task.retry_after_s, 0.5))
    finally:
        channel.close()


@pytest.mark.timeout(120)
def test_more_pollers_than_the_pool_parks_still_get_answers_and_rounds_run(tmp_path: Path) -> None:
    # a pool of 8 threads parks at most 2 polls and receives 1 upload at a time: without the
    # caps, 7 parked long-polls would leave one thread for every Join, FetchModel and upload
    limits = Limits(max_workers=8, uploads=1, parked_polls=2)
    config = raw.small_config(**{"federation.rounds": 2, "federation.min_clients": POLLERS + 1,
                                 "federation.poll_timeout_s": 5.0})
    server = server_app.start(config.model_copy(update={"admission": limits}), "127.0.0.1:0", tmp_path / "state")
    told_to_wait = threading.Event()
    results: dict[str, list[int]] = {}
    threads = [threading.Thread(target=_client, args=(server.port, f"c{i}", told_to_wait, results), daemon=True)
               for i in range(POLLERS)]
    try:
        for thread in threads:
            thread.start()
        # the round needs one more client, so all pollers wait; past the cap they hear WAIT at once
        assert told_to_wait.wait(timeout=60), "no poll beyond the cap was answered with a retry delay"
        last = threading.Thread(target=_client, args=(server.port, "last", threading.Event(), results), daemon=True)
        last.start()
        threads.append(last)
        assert server.wait(timeout=90), "the rounds did not finish"
        server.coordinator.wait_for_shutdown_delivery(30)
        for thread in threads:
            thread.join(timeout=30)
    finally:
        server.shutdown()
    assert server.coordinator.completed_round == 2
    assert len(results) == POLLERS + 1 and all(rounds == [1, 2] for rounds in results.values())


def test_an_upload_beyond_the_slots_is_refused_at_once_with_turns_spread_over_the_refused() -> None:
    now = [100.0]
    gate = UploadGate(active=2, clock=lambda: now[0])
    first, second = gate.take("a"), gate.take("b")

    def refused_wait(who: str) -> float:
        with pytest.raises(UploadSlotsBusyError) as refused:
            gate.take(who)
        return refused.value.retry_after_s

    # each newly refused upload gets the next turn: half a slot hold (two slots) after the one before
    assert [refused_wait(who) for who in "cdef"] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    now[0] += 0.5
    assert refused_wait("f") == pytest.approx(0.5)  # back early: the same turn, not the back of the queue
    now[0] += 10.0
    assert refused_wait("c") == pytest.approx(0.25)  # its turn came and the slots were taken: the next turn
    assert refused_wait("e") == pytest.approx(0.5)
    first.release()
    first.release()  # given back once only
    third = gate.take("d")
    # the slot was held 10.5 s: the average hold grew towards it, and the turns with it
    assert refused_wait("g") == pytest.approx(0.5 + (0.5 + 0.2 * (10.5 - 0.5)) / 2)
    second.release()
    third.release()
    with gate.take("g"), gate.take("h"):
        pass


def _refusal(call: Callable[[], object]) -> tuple[grpc.StatusCode, str | None]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), refusal_of(exc)
    return grpc.StatusCode.OK, None


@pytest.mark.timeout(120)
def test_a_client_that_stalls_mid_upload_loses_its_slot_at_the_deadline(tmp_path: Path) -> None:
    # the round's deadline passes when the test moves the server's clock past it
    clock, round_timeout_s = ManualClock(), 60.0
    limits = Limits(max_workers=8, uploads=1)
    config = raw.small_config(**{"federation.rounds": 2, "federation.min_clients": 2, "federation.min_updates": 1,
                                 "federation.round_timeout_s": round_timeout_s, "federation.poll_timeout_s": 1.0})
    server = server_app.start(config.model_copy(update={"admission": limits}), "127.0.0.1:0", tmp_path / "state", clock=clock)
    stall = threading.Event()
    channels = []
    try:
        channel, stub = raw.stub_for(server.port)
        channels.append(channel)
        staller = raw.join(stub, "staller").session
        channel2, stub2 = raw.stub_for(server.port)
        channels.append(channel2)
        good = raw.join(stub2, "good").session
        task = raw.wait_task(stub, staller)
        messages = raw.answer_messages(stub, staller, task)

        def stalled():
            yield messages[0]
            yield messages[1]
            stall.wait()

        hanging = stub.SubmitUpdate.future(stalled(), timeout=60)
        raw.wait_for(lambda: server.coordinator.bytes_received > 0, what="the stalled upload to hold the slot")
        # the good client's upload finds the only slot taken and is refused at once, to come back later
        good_task = raw.wait_task(stub2, good)
        assert _refusal(lambda: raw.answer(stub2, good, good_task)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "upload_slots_busy")
        assert not hanging.done()
        # the round closes at its deadline with no update; the stalled stream is cut, so the slot comes back
        clock.advance(round_timeout_s + 1)
        assert _refusal(lambda: hanging.result(timeout=30)) == (grpc.StatusCode.FAILED_PRECONDITION, "stale_round")
        # the round's next attempt: the good client's upload gets the slot
        task = raw.wait_task(stub2, good)
        assert task.round == 1 and task.task_id != good_task.task_id
        assert raw.answer(stub2, good, task).accepted
    finally:
        stall.set()
        server.shutdown()
        for channel in channels:
            channel.close()


FLEET = 40


@pytest.mark.timeout(180)
def test_many_more_parked_polls_than_threads_and_the_sampled_hear_their_task_without_a_retry_delay(tmp_path: Path) -> None:
    # 40 joined clients long-poll a server with 4 worker threads: every poll parks (none is told
    # to come back later), and the 4 sampled each round hear of their task on the poll they hold
    limits = Limits(max_workers=4)
    config = raw.small_config(**{"federation.rounds": 2, "federation.min_clients": 4, "federation.start_clients": FLEET,
                                 "federation.fraction": 4 / FLEET, "federation.poll_timeout_s": 60.0})
    server = server_app.start(config.model_copy(update={"admission": limits}), "127.0.0.1:0", tmp_path / "state")
    told_to_wait = threading.Event()
    results: dict[str, list[int]] = {}
    threads = [threading.Thread(target=_client, args=(server.port, f"f{i}", told_to_wait, results), daemon=True)
               for i in range(FLEET)]
    try:
        for thread in threads:
            thread.start()
        assert server.wait(timeout=150), "the rounds did not finish"
        server.coordinator.wait_for_shutdown_delivery(30)
        for thread in threads:
            thread.join(timeout=30)
    finally:
        server.shutdown()
    assert server.coordinator.completed_round == 2
    assert not told_to_wait.is_set(), "a poll was answered with a retry delay instead of parking"
    assert len(results) == FLEET and sum(len(rounds) for rounds in results.values()) == 2 * 4
