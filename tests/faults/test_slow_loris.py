"""Update streams that never send their header (no credentials, slow-loris) must not stop the run:
they wait on the event loop without a worker thread, are bounded, and are cut off after the
header limit (on the server's clock, moved by hand here); rounds still complete and a Join still
succeeds meanwhile."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fedser_server import app as server_app
from fedser_server.clock import Clock
from fedser_server.observability.metrics import start_metrics_endpoint
from fedser_server.transport.admission import Limits
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.refusal import refusal_of
from tests.faults import raw
from tests.manual_clock import ManualClock
from tests.observability.test_metrics import scrape

pytestmark = pytest.mark.timeout(180)


def _start(tmp: Path, limits: Limits, clock: Clock = time.monotonic, **overrides: object) -> server_app.RunningServer:
    config = raw.small_config(**overrides)
    return server_app.start(config.model_copy(update={"admission": limits}), "127.0.0.1:0", tmp / "state", clock=clock)


class HeaderlessStreams:
    """`n` SubmitUpdate streams that are open and send nothing until released."""

    def __init__(self, stub, n: int) -> None:
        self._release = threading.Event()
        self.calls = [stub.SubmitUpdate.future(self._nothing(), timeout=120) for _ in range(n)]

    def _nothing(self) -> Iterator[pb.UpdateChunk]:
        self._release.wait()
        return
        yield

    def close(self) -> None:
        self._release.set()
        for call in self.calls:
            call.cancel()


def _outcome(future) -> tuple[grpc.StatusCode, str | None]:
    try:
        future.result(timeout=60)
    except grpc.RpcError as exc:
        return exc.code(), refusal_of(exc)
    return grpc.StatusCode.OK, None


def test_headerless_streams_hold_no_worker_and_rounds_still_complete(tmp_path: Path) -> None:
    # more silent streams than worker threads: before, they held every worker and a Join timed out
    workers = 8
    # the server's clock stands still: the header limit cannot pass while the rounds run, however slowly
    server = _start(tmp_path, Limits(max_workers=workers), ManualClock(), **{"federation.rounds": 3})
    loris_channel, loris_stub = raw.stub_for(server.port)
    channel, stub = raw.stub_for(server.port)
    streams = HeaderlessStreams(loris_stub, 5 * workers)
    try:
        raw.wait_for(lambda: _waiting_for_header(server) == 5 * workers, what="the silent streams to be open")
        session = raw.join(stub, "honest").session
        for _ in range(3):
            raw.answer(stub, session, raw.wait_task(stub, session))
        assert server.wait(timeout=60) and server.failure is None and server.coordinator.completed_round == 3
        assert not any(call.done() for call in streams.calls)  # still open, none of them ever held a thread
    finally:
        streams.close()
        loris_channel.close()
        channel.close()
        server.shutdown(grace_s=0.2)


def _waiting_for_header(server: server_app.RunningServer) -> int:
    return server.bound.servicer.waiting_for_header


def test_unauthenticated_streams_beyond_the_bound_are_refused_and_counted(tmp_path: Path) -> None:
    server = _start(tmp_path, Limits(unauthenticated_streams=4), ManualClock(), **{"federation.min_clients": 2})
    channel, stub = raw.stub_for(server.port)
    streams = HeaderlessStreams(stub, 4)
    try:
        raw.wait_for(lambda: _waiting_for_header(server) == 4, what="the silent streams to be open")
        extra = HeaderlessStreams(stub, 1)
        assert _outcome(extra.calls[0]) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "unauthenticated_streams")
        extra.close()
        assert server.coordinator.refusals["unauthenticated_streams"] == 1
        endpoint = start_metrics_endpoint(server.coordinator, 0, "127.0.0.1")
        try:
            assert scrape(endpoint.port)[("fedser_updates_refused_total", (("reason", "unauthenticated_streams"),))] == 1
        finally:
            endpoint.stop()
        # a Join is not an update stream and is not held back
        raw.join(stub, "honest")
    finally:
        streams.close()
        channel.close()
        server.shutdown(grace_s=0.2)


def test_a_stream_without_its_header_within_the_limit_is_cut_off(tmp_path: Path) -> None:
    # the limit is counted on the server's clock, which moves only when the test moves it
    clock, limits = ManualClock(), Limits()
    server = _start(tmp_path, limits, clock, **{"federation.min_clients": 2})
    channel, stub = raw.stub_for(server.port)
    streams = HeaderlessStreams(stub, 1)
    try:
        raw.wait_for(lambda: _waiting_for_header(server) == 1, what="the silent stream to be open")
        clock.advance(limits.header_timeout_s - 1)
        assert not streams.calls[0].done() and _waiting_for_header(server) == 1  # within the limit: still open
        clock.advance(2)
        assert _outcome(streams.calls[0]) == (grpc.StatusCode.DEADLINE_EXCEEDED, "header_timeout")
        assert server.coordinator.refusals["header_timeout"] == 1
        assert _waiting_for_header(server) == 0
    finally:
        streams.close()
        channel.close()
        server.shutdown(grace_s=0.2)
