"""Over real gRPC: what a client author runs into at the server's edge (docs/protocol.md):
digests in an update header, a duplicate update, a rejoin with a foreign id, a full disk."""

from __future__ import annotations

import errno
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedser_server.observability.metrics import start_metrics_endpoint
from fedser_server.state.spill import SpillFile
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.refusal import refusal_of
from tests.faults import raw
from tests.observability.test_metrics import scrape

pytestmark = pytest.mark.timeout(120)


def _refused(call) -> tuple[grpc.StatusCode, str | None, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), refusal_of(exc), exc.details() or ""
    return grpc.StatusCode.OK, None, ""


@pytest.fixture
def round_open(tmp_path: Path):
    server = raw.start(tmp_path, **{"federation.rounds": 2})
    channel, stub = raw.stub_for(server.port)
    session = raw.join(stub, "raw").session
    task = raw.wait_task(stub, session)
    state = raw.fetch(stub, session, task)
    yield server, stub, session, task, state
    channel.close()
    server.shutdown(grace_s=0.2)


def test_an_update_header_carrying_digests_is_refused(round_open) -> None:
    server, stub, session, task, state = round_open
    before = raw.snapshot(server)
    messages = raw.update_messages(session, task, raw.update_for(state))
    messages[0].header.blob.sha256 = messages[-1].trailer.sha256
    code, reason, details = _refused(lambda: raw.submit(stub, messages))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_update") and "must be empty" in details
    assert raw.snapshot(server) == before
    assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(state))).accepted


def test_a_duplicate_update_gets_one_clear_message(round_open) -> None:
    server, stub, session, task, state = round_open
    messages = raw.update_messages(session, task, raw.update_for(state))
    assert raw.submit(stub, messages).accepted
    # right away (the round may still be closing) and once the next round is open: the same answer
    code, reason, details = _refused(lambda: raw.submit(stub, messages))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "stale_round")
    assert "already answered" in details or "round 1 is over" in details, details
    raw.wait_task(stub, session)
    code, reason, details = _refused(lambda: raw.submit(stub, messages))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "stale_round")
    assert "round 1 is over (training of round 2 is in progress)" in details, details
    assert server.coordinator.refusals["stale_round"] == 2


def test_a_duplicate_update_in_an_open_round_says_the_task_was_answered(tmp_path: Path) -> None:
    server = raw.start(tmp_path, **{"federation.min_clients": 2})
    channel, stub = raw.stub_for(server.port)
    try:
        first, _ = raw.join(stub, "a").session, raw.join(stub, "b").session
        task = raw.wait_task(stub, first)
        messages = raw.answer_messages(stub, first, task)
        assert raw.submit(stub, messages).accepted
        code, reason, details = _refused(lambda: raw.submit(stub, messages))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "stale_round")
        assert details == f"task '{task.task_id}' of round 1 was already answered: a task takes one answer"
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_joining_with_another_clients_id_joins_as_yourself(tmp_path: Path) -> None:
    """docs/protocol.md: after `unknown_client`, join again with the same id. A client whose saved
    id belongs to someone else must not be refused for ever: it joins as itself."""
    server = raw.start(tmp_path, **{"federation.min_clients": 3})
    channel, stub = raw.stub_for(server.port)
    try:
        alice = raw.join(stub, "alice").session
        bob = raw.join(stub, "bob", client_id=alice.client_id).session
        assert bob.client_id != alice.client_id
        again = raw.join(stub, "bob", client_id=alice.client_id).session
        assert again.client_id == bob.client_id
        records = server.coordinator.registry.clients
        assert records[alice.client_id].name == "alice" and records[bob.client_id].name == "bob"
        # alice's session is untouched
        stub.Heartbeat(pb.HeartbeatRequest(protocol_version=raw.V, session=alice), timeout=10)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_a_full_disk_while_parking_an_upload_is_resource_exhausted_and_the_update_can_be_sent_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = raw.start(tmp_path, **{"federation.inline_model_max_bytes": 0})  # every update is parked on disk
    channel, stub = raw.stub_for(server.port)
    try:
        session = raw.join(stub, "raw").session
        task = raw.wait_task(stub, session)
        state = raw.fetch(stub, session, task)
        before = raw.snapshot(server)

        def no_space(self: SpillFile, data: memoryview) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(SpillFile, "_write_all", no_space)
            code, reason, details = _refused(lambda: raw.submit(stub, raw.update_messages(session, task, raw.update_for(state))))
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "disk_full"), details
        assert "no disk space" in details
        assert server.coordinator.refusals["disk_full"] == 1 and raw.snapshot(server) == before
        endpoint = start_metrics_endpoint(server.coordinator, 0, "127.0.0.1")
        try:
            assert scrape(endpoint.port)[("fedser_updates_refused_total", (("reason", "disk_full"),))] == 1
        finally:
            endpoint.stop()
        # space again: the same task takes the update
        assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(state))).accepted
        assert server.wait(timeout=30) and server.failure is None
        np.testing.assert_allclose(server.coordinator.state["w.head.bias"], state["w.head.bias"] + 0.01, rtol=1e-6)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_describe_tells_a_stranger_what_join_needs(tmp_path: Path) -> None:
    from fedser_server.security.tokens import TokenStore

    tokens = TokenStore(tmp_path / "tokens.json")
    token = tokens.add("alice")
    server = raw.start(tmp_path, tokens=tokens, **{"features.name": "egemaps"})
    channel, stub = raw.stub_for(server.port)
    try:
        info = stub.Describe(pb.DescribeRequest(protocol_version=0), timeout=10)  # no token, no session, any version
        assert (info.protocol_version, info.feature_name, info.num_classes) == (raw.V, "egemaps", 4)
        assert info.feature_dim == server.coordinator.feature_dim and len(info.class_names) == 4
        assert info.enrolment_tokens and set(info.update_checksums) == {pb.CHECKSUM_SHA256, pb.CHECKSUM_XXH3_128}
        assert info.inline_model_max_bytes == server.coordinator.config.federation.inline_model_max_bytes
        reply = stub.Join(pb.JoinRequest(protocol_version=info.protocol_version, token=token, name="alice",
                                         feature_name=info.feature_name, feature_dim=info.feature_dim,
                                         label_counts=[1] * info.num_classes), timeout=10)
        assert reply.settings.feature_dim == info.feature_dim
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)


def test_a_disk_that_stays_full_for_a_round_deadline_stops_the_run_loudly(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(self: SpillFile, data: memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SpillFile, "_write_all", no_space)
    server = raw.start(tmp_path, **{"federation.inline_model_max_bytes": 0, "federation.round_timeout_s": 60.0})
    now = [1000.0]
    server.coordinator.clock = lambda: now[0]  # the disk's patience is counted on this clock
    channel, stub = raw.stub_for(server.port)
    try:
        session = raw.join(stub, "raw").session
        task = raw.wait_task(stub, session)
        messages = raw.update_messages(session, task, raw.update_for(raw.fetch(stub, session, task)))
        assert _refused(lambda: raw.submit(stub, messages))[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "disk_full")
        now[0] += 30.0  # still within a round deadline: the run goes on
        assert _refused(lambda: raw.submit(stub, messages))[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "disk_full")
        assert server.coordinator.failure is None and not server.coordinator.stopping
        now[0] += 31.0
        assert _refused(lambda: raw.submit(stub, messages))[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "disk_full")
        assert server.wait(timeout=30)
        assert "no disk space to park uploads" in str(server.failure)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
