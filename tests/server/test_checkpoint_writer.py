"""The checkpoint is written while the next round's tasks go out, yet no update of that round is
accepted before it is on disk; the writer keeps the order of what it is given and stops at a failure."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from safetensors import safe_open

from fedser_server.app import serve_until_done
from fedser_server.state.store import StateStore
from fedser_server.state.writer import OrderedWriter
from fedser_shared.errors import StateError
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from tests.faults import raw

pytestmark = pytest.mark.timeout(120)


def test_the_next_round_opens_during_the_checkpoint_and_accepts_updates_only_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release, writing = threading.Event(), threading.Event()
    save_global = StateStore.save_global

    def slow_save(self, state, round_index, train_record=None):
        writing.set()
        release.wait(30)
        save_global(self, state, round_index, train_record)

    monkeypatch.setattr(StateStore, "save_global", slow_save)
    server = raw.start(tmp_path, **{"federation.rounds": 2})
    channel, stub = raw.stub_for(server.port)
    try:
        session = raw.join(stub).session
        first = raw.wait_task(stub, session)
        raw.answer(stub, session, first)
        assert writing.wait(30)
        second = raw.wait_task(stub, session)  # handed out while round 1 is still being written
        assert second.round == 2 and not release.is_set()
        received_in_round_1 = server.coordinator.bytes_received
        acked: list[pb.UpdateAck] = []
        upload = threading.Thread(target=lambda: acked.append(raw.answer(stub, session, second)))
        upload.start()
        # the whole update of round 2 is in (the same size as round 1's): it waits for round 1's checkpoint
        raw.wait_for(lambda: server.coordinator.bytes_received >= 2 * received_in_round_1, what="round 2's update to arrive")
        upload.join(timeout=1.0)
        assert not acked, "an update of round 2 was accepted before round 1 was on disk"
        release.set()
        upload.join(timeout=30)
        assert acked and acked[0].accepted
        assert server.wait(timeout=30)
    finally:
        release.set()
        channel.close()
        server.shutdown(grace_s=0.2)
    with safe_open(str(tmp_path / "state" / "global.safetensors"), framework="numpy") as handle:
        assert handle.metadata()["round"] == "2"
    assert [m["round"] for m in StateStore(tmp_path / "state").read_metrics()] == [1, 2]


def test_a_checkpoint_that_cannot_be_written_ends_the_run_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(self, state, round_index, train_record=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(StateStore, "save_global", disk_full)
    server = raw.start(tmp_path, **{"federation.rounds": 3})
    channel, stub = raw.stub_for(server.port)
    try:
        session = raw.join(stub).session
        task = raw.wait_task(stub, session)
        raw.answer(stub, session, task)
        assert server.wait(timeout=30), "the rounds went on without their checkpoint"
        assert not server.coordinator.finished and not (tmp_path / "state" / "global.safetensors").exists()
        assert not (tmp_path / "state" / "metrics.jsonl").exists()
        with pytest.raises(StateError) as stopped:  # the CLI prints it as one line and exits 2
            serve_until_done(server, shutdown_grace_s=0.2)
        assert "No space left on device" in str(stopped.value) and "\n" not in str(stopped.value)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_the_writer_runs_jobs_in_order_and_stops_at_the_first_failure() -> None:
    writer = OrderedWriter()
    done: list[int] = []

    def fail() -> None:
        raise OSError("disk full")

    for job in (lambda: done.append(1), lambda: done.append(2), fail, lambda: done.append(3)):
        writer.submit(job)
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    with pytest.raises(OSError, match="disk full"):
        writer.submit(lambda: done.append(4))
    writer.close()
    assert done == [1, 2]
