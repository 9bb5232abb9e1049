"""Property-based fuzz of every request message against a live server: whatever arrives, the
server answers with a deliberate status (never UNKNOWN/INTERNAL), keeps serving, and the
global model does not change; afterwards the real client still completes the round."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedser_server.security.tokens import TokenStore
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from tests.faults import raw

pytestmark = pytest.mark.timeout(240)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                derandomize=True)
CRASHES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

# small counts, huge ones and the signed/unsigned boundaries where int64 and SQLite overflow
u32 = st.one_of(st.integers(0, 1000), st.integers(0, 2**32 - 1), st.sampled_from([2**31 - 1, 2**31, 2**32 - 1]))
u64 = st.one_of(st.integers(0, 1000), st.integers(0, 2**64 - 1), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1]))
text, blob = st.text(max_size=40), st.binary(max_size=300)
doubles = st.floats(allow_nan=True, allow_infinity=True)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    tokens = TokenStore(tmp / "tokens.json")
    token = tokens.add("alice")
    server = raw.start(tmp, tokens=tokens, **{"federation.round_timeout_s": 600.0})
    channel, stub = raw.stub_for(server.port)
    session = raw.join(stub, token=token).session
    task = raw.wait_task(stub, session)
    state = raw.fetch(stub, session, task)
    yield {"server": server, "stub": stub, "session": session, "task": task, "state": state, "token": token,
           "before": raw.snapshot(server)}
    channel.close()
    server.shutdown(grace_s=0.2)


def _versions():
    return st.one_of(st.just(raw.V), u32)


def _sessions(live):
    real = live["session"]
    forged = st.builds(pb.Session, client_id=st.one_of(st.just(real.client_id), text), session_token=text)
    return st.one_of(st.just(real), forged)


def _rounds(live):
    return st.one_of(st.just(live["task"].round), u32)


def _task_ids(live):
    return st.one_of(st.just(live["task"].task_id), text)


@st.composite
def near_valid(draw, message_type, valid: dict, wild: dict):
    """A valid message with one to three fields replaced by wild values: deep enough to reach
    the checks behind the first ones, wild enough to test each of them."""
    fields = draw(st.sets(st.sampled_from(sorted(wild)), min_size=1, max_size=3))
    return message_type(**{**valid, **{name: draw(wild[name]) for name in fields}})


def _check(live, call) -> None:
    code, details = raw.code_of(call)
    assert code not in CRASHES, (code, details)
    assert raw.snapshot(live["server"]) == live["before"]


def test_fuzz_join(live) -> None:
    valid = {"protocol_version": raw.V, "token": live["token"], "name": "alice", "feature_name": "emobase", "feature_dim": 988,
             "label_counts": [5, 5, 5, 5], "n_unlabeled": 3, "n_eval": 2, "client_id": live["session"].client_id}
    wild = {"protocol_version": u32, "token": text, "name": text, "feature_name": text, "feature_dim": u32,
            "label_counts": st.one_of(st.lists(u64, min_size=4, max_size=4), st.lists(u64, max_size=6)),
            "n_unlabeled": u64, "n_eval": u64, "client_id": text}

    @FUZZ
    @given(near_valid(pb.JoinRequest, valid, wild))
    def run(request):
        _check(live, lambda: live["stub"].Join(request, timeout=10))

    run()


def test_fuzz_get_task_heartbeat_leave(live) -> None:
    @FUZZ
    @given(_versions(), _sessions(live), st.sampled_from(["GetTask", "Heartbeat", "Leave"]), text)
    def run(version, session, method, reason):
        stub = live["stub"]
        if method == "GetTask":
            _check(live, lambda: stub.GetTask(pb.GetTaskRequest(protocol_version=version, session=session), timeout=10))
        elif method == "Heartbeat":
            _check(live, lambda: stub.Heartbeat(pb.HeartbeatRequest(protocol_version=version, session=session), timeout=10))
        else:
            _check(live, lambda: stub.Leave(pb.LeaveRequest(protocol_version=version, session=session, reason=reason), timeout=10))

    run()


def test_fuzz_fetch_model(live) -> None:
    @FUZZ
    @given(st.builds(pb.FetchModelRequest, protocol_version=_versions(), session=_sessions(live), round=_rounds(live),
                     task_id=_task_ids(live)))
    def run(request):
        _check(live, lambda: list(live["stub"].FetchModel(request, timeout=10)))

    run()


def test_fuzz_evaluation(live) -> None:
    valid = {"protocol_version": raw.V, "session": live["session"], "round": live["task"].round, "task_id": live["task"].task_id,
             "num_classes": 4, "confusion": [1] * 16, "loss": 0.5}
    wild = {"protocol_version": u32, "session": _sessions(live), "round": u32, "task_id": text, "num_classes": u32,
            "confusion": st.one_of(st.lists(u64, min_size=16, max_size=16), st.lists(u64, max_size=20)), "loss": doubles}

    @FUZZ
    @given(near_valid(pb.EvaluationReport, valid, wild))
    def run(request):
        _check(live, lambda: live["stub"].SubmitEvaluation(request, timeout=10))

    run()


def test_fuzz_update_streams(live) -> None:
    real = raw.update_messages(live["session"], live["task"], raw.update_for(live["state"]))
    real_len, real_sha = real[0].header.blob.total_len, real[0].header.blob.sha256
    valid = {"protocol_version": raw.V, "session": live["session"], "round": live["task"].round, "task_id": live["task"].task_id,
             "n_samples": 10, "metrics": pb.TrainMetrics(loss=0.5), "blob": pb.BlobHeader(total_len=real_len, sha256=real_sha)}
    wild = {"protocol_version": u32, "session": _sessions(live), "round": u32, "task_id": text, "n_samples": u64,
            "metrics": st.builds(pb.TrainMetrics, loss=doubles, pseudo_taken_per_class=st.lists(u64, max_size=6),
                                 pseudo_correct_per_class=st.lists(u64, max_size=6), pseudo_with_truth=u64),
            "blob": st.builds(pb.BlobHeader, total_len=st.one_of(st.just(real_len), u64), sha256=st.one_of(st.just(real_sha), blob))}
    headers = near_valid(pb.UpdateHeader, valid, wild)
    chunk = st.one_of(st.builds(pb.UpdateChunk, data=blob), st.builds(pb.UpdateChunk, header=headers),
                      st.sampled_from(real[1:]), st.just(pb.UpdateChunk()))

    @FUZZ
    @given(st.one_of(headers.map(lambda h: pb.UpdateChunk(header=h)), chunk), st.lists(chunk, max_size=4), st.booleans())
    def run(first, rest, flip):
        messages = [first, *rest]
        if flip and messages[-1].WhichOneof("payload") == "data" and messages[-1].data:
            data = bytearray(messages[-1].data)
            data[-1] ^= 1
            messages[-1] = pb.UpdateChunk(data=bytes(data))
        _check(live, lambda: raw.submit(live["stub"], messages))

    run()


def test_after_the_fuzz_the_real_client_completes_the_round(live) -> None:
    server, stub = live["server"], live["stub"]
    session = raw.join(stub, token=live["token"], client_id=live["session"].client_id).session
    task = raw.wait_task(stub, session)
    assert task.task_id == live["task"].task_id
    assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(live["state"]))).accepted
    assert server.wait(timeout=30)
    np.testing.assert_allclose(server.coordinator.state["w.head.bias"], live["state"]["w.head.bias"] + 0.01, rtol=1e-6)
