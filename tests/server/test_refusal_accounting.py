"""Issue 14 §3: every refused call is logged and counted by reason, named in the call's trailing
metadata, and on record in metrics.jsonl and Prometheus, also when it arrives after its round."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc
import pytest

from fedser_server.observability.metrics import start_metrics_endpoint
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.refusal import refusal_of
from tests.faults import raw
from tests.observability.test_metrics import scrape

pytestmark = pytest.mark.timeout(120)


def _refused(call) -> tuple[grpc.StatusCode, str | None]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), refusal_of(exc)
    raise AssertionError("the call was not refused")


def test_refusals_of_every_call_are_counted_by_reason_and_recorded(tmp_path: Path) -> None:
    server = raw.start(tmp_path, **{"federation.rounds": 2})
    endpoint = start_metrics_endpoint(server.coordinator, 0, "127.0.0.1")
    channel, stub = raw.stub_for(server.port)
    try:
        bad_version = pb.JoinRequest(protocol_version=99, name="old", feature_name="emobase", feature_dim=988, label_counts=raw.LABELS)
        assert _refused(lambda: stub.Join(bad_version, timeout=10)) == (grpc.StatusCode.FAILED_PRECONDITION, "protocol_mismatch")
        session = raw.join(stub, "raw").session
        forged = pb.Session(client_id=session.client_id, session_token="forged")
        assert _refused(lambda: stub.GetTask(pb.GetTaskRequest(protocol_version=raw.V, session=forged), timeout=10)) == \
            (grpc.StatusCode.PERMISSION_DENIED, "unknown_client")
        task = raw.wait_task(stub, session)
        late = raw.join(stub, "late").session
        assert _refused(lambda: raw.fetch(stub, late, task)) == (grpc.StatusCode.PERMISSION_DENIED, "not_participating")
        stub.Leave(pb.LeaveRequest(protocol_version=raw.V, session=late, reason="test"), timeout=10)
        report = pb.EvaluationReport(protocol_version=raw.V, session=session, round=task.round, task_id=task.task_id,
                                     num_classes=4, confusion=[0] * 16)
        assert _refused(lambda: stub.SubmitEvaluation(report, timeout=10)) == (grpc.StatusCode.PERMISSION_DENIED, "not_participating")
        state = raw.fetch(stub, session, task)
        assert raw.answer(stub, session, task).accepted
        second = raw.wait_task(stub, session)
        # round 1 has closed: its update arrives too late, and is still on record
        assert _refused(lambda: raw.submit(stub, raw.update_messages(session, task, raw.update_for(state)))) == \
            (grpc.StatusCode.FAILED_PRECONDITION, "stale_round")
        assert raw.answer(stub, session, second).accepted
        assert server.wait(timeout=30)
        values = scrape(endpoint.port)
    finally:
        endpoint.stop()
        channel.close()
        server.shutdown(grace_s=0.2)
    expected = {"Join.protocol_mismatch": 1, "GetTask.unknown_client": 1, "FetchModel.not_participating": 1,
                "SubmitEvaluation.not_participating": 1}
    lines = [json.loads(line) for line in (tmp_path / "state" / "metrics.jsonl").read_text().splitlines()]
    recorded: dict[str, int] = {}
    for line in lines:
        for key, n in line.get("refused_requests", {}).items():
            recorded[key] = recorded.get(key, 0) + n
    assert recorded == expected
    assert lines[1]["refused"] == {"stale_round": 1}
    for key, n in expected.items():
        rpc, reason = key.split(".")
        assert values[("fedser_requests_refused_total", (("reason", reason), ("rpc", rpc)))] == n
    assert values[("fedser_updates_refused_total", (("reason", "stale_round"),))] == 1


def test_a_client_that_cancels_mid_upload_is_counted_as_cancelled(tmp_path: Path) -> None:
    server = raw.start(tmp_path)
    channel, stub = raw.stub_for(server.port)
    try:
        session = raw.join(stub, "raw").session
        task = raw.wait_task(stub, session)
        messages = raw.answer_messages(stub, session, task)
        sent, release = threading.Event(), threading.Event()

        def stream():
            yield messages[0]
            yield messages[1]
            sent.set()
            release.wait(30)

        call = stub.SubmitUpdate.future(stream(), timeout=60)
        sent.wait(10)
        # once the server has taken in the first chunk, the cancel lands mid-upload
        raw.wait_for(lambda: server.coordinator.bytes_received > 0, what="the first chunk to be received")
        call.cancel()
        release.set()
        raw.wait_for(lambda: sum(server.coordinator.refusals.values()) == 1, what="the refusal to be counted")
        assert dict(server.coordinator.refusals) == {"cancelled": 1}
        # the client may still send its update
        assert raw.submit(stub, messages).accepted
        assert server.wait(timeout=30)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
