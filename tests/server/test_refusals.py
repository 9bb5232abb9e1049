"""Over real gRPC: bad updates and protocol mismatches are refused; the global model is untouched."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from fedser_shared import PROTOCOL_VERSION, codec
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from tests.server.one_client import start_one_client_round


@pytest.fixture
def one_client_round(tmp_path: Path):
    live = start_one_client_round(tmp_path)
    yield live.server, live.stub, live.session, live.task
    live.close()


def _submit(stub, session, task, tensors, n_samples=10, tamper=None):
    blob = codec.encode_blob(tensors)
    header = pb.UpdateHeader(protocol_version=PROTOCOL_VERSION, session=session, round=task.round, task_id=task.task_id,
                             n_samples=n_samples, blob=pb.BlobHeader(total_len=blob.total_len))
    chunks = [bytes(c) for c in blob.chunks()]
    if tamper:
        chunks = tamper(chunks)
    messages = [pb.UpdateChunk(header=header), *(pb.UpdateChunk(data=c) for c in chunks),
                pb.UpdateChunk(trailer=pb.BlobTrailer(sha256=blob.sha256))]
    return stub.SubmitUpdate(iter(messages), timeout=30)


def _good_update(server) -> dict[str, np.ndarray]:
    return {"delta." + n[2:]: np.full(v.shape, 0.01, np.float32) for n, v in server.coordinator.state.items()}


def _snapshot(server) -> dict[str, bytes]:
    return {n: v.tobytes() for n, v in server.coordinator.state.items()}


def _bad_updates(server):
    good = _good_update(server)
    wrong_name = dict(good)
    wrong_name["delta.extra"] = wrong_name.pop("delta.head.bias")
    wrong_shape = dict(good, **{"delta.head.bias": np.zeros(7, np.float32)})
    wrong_dtype = dict(good, **{"delta.head.bias": good["delta.head.bias"].astype(np.float64)})
    non_finite = dict(good)
    non_finite["delta.head.weight"] = good["delta.head.weight"].copy()
    non_finite["delta.head.weight"][0, 0] = np.nan
    return {"names": (wrong_name, "names differ"), "shape": (wrong_shape, "shape"), "dtype": (wrong_dtype, "dtype"),
            "finite": (non_finite, "NaN")}


@pytest.mark.parametrize("kind", ["names", "shape", "dtype", "finite"])
def test_bad_tensors_are_invalid_argument_and_leave_the_model_unchanged(one_client_round, kind: str) -> None:
    server, stub, session, task = one_client_round
    before = _snapshot(server)
    tensors, message = _bad_updates(server)[kind]
    with pytest.raises(grpc.RpcError) as info:
        _submit(stub, session, task, tensors)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert _snapshot(server) == before
    # the round is still open for this client: a good update afterwards is accepted
    assert _submit(stub, session, task, _good_update(server)).accepted
    assert server.wait(timeout=30)
    after = server.coordinator.state
    np.testing.assert_allclose(after["w.head.bias"], np.frombuffer(before["w.head.bias"], np.float32) + 0.01, rtol=1e-6)


def test_a_corrupted_chunk_is_refused_and_an_empty_update_carries_zero_tensors_and_adds_nothing(one_client_round) -> None:
    server, stub, session, task = one_client_round
    before = _snapshot(server)

    def flip(chunks):
        chunks[0] = bytes([chunks[0][0] ^ 0xFF]) + chunks[0][1:]
        return chunks

    with pytest.raises(grpc.RpcError) as info:
        _submit(stub, session, task, _good_update(server), tamper=flip)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "checksum" in info.value.details()
    assert _snapshot(server) == before
    # n_samples 0 with deltas of 1e6: not an empty participation, and it does not use up the task
    huge = {n: np.full(v.shape, 1e6, v.dtype) for n, v in _good_update(server).items()}
    with pytest.raises(grpc.RpcError) as info:
        _submit(stub, session, task, huge, n_samples=0)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "zero tensors" in info.value.details()
    assert server.coordinator.refusals["invalid_update"] == 1
    # n_samples 0 with zero tensors: a client with nothing to train on yet took part; acked, counted, never aggregated
    zeros = {n: np.zeros_like(v) for n, v in _good_update(server).items()}
    assert _submit(stub, session, task, zeros, n_samples=0).accepted
    assert server.wait(timeout=30)
    assert _snapshot(server) == before


def test_protocol_mismatch_names_both_versions(one_client_round) -> None:
    _, stub, session, _ = one_client_round
    with pytest.raises(grpc.RpcError) as info:
        stub.Join(pb.JoinRequest(protocol_version=PROTOCOL_VERSION + 41, name="future"), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert str(PROTOCOL_VERSION + 41) in info.value.details() and str(PROTOCOL_VERSION) in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.GetTask(pb.GetTaskRequest(protocol_version=0, session=session), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_a_forged_session_is_permission_denied(one_client_round) -> None:
    _, stub, session, task = one_client_round
    forged = pb.Session(client_id=session.client_id, session_token="guess")
    with pytest.raises(grpc.RpcError) as info:
        stub.FetchModel(pb.FetchModelRequest(protocol_version=PROTOCOL_VERSION, session=forged, round=task.round,
                                             task_id=task.task_id), timeout=10).next()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_health_service_reports_serving(one_client_round) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server, *_ = one_client_round
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="fedser.v1.Coordinator"), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
