"""Over real gRPC: XXH3-checked updates, streamed or in one SubmitSmallUpdate message, land in the
round exactly like SHA-256 streams; corrupt, oversized or malformed ones are refused and leave
the global model untouched."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from fedser_server.engine import incoming as incoming_module
from fedser_shared import PROTOCOL_VERSION, codec, wire
from fedser_shared.checksum import Checksum
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc
from tests.server.one_client import start_one_client_round


def _start(tmp_path: Path, **overrides: object):
    live = start_one_client_round(tmp_path, **overrides)
    return live.server, live.channel, live.stub, live.session, live.task


@pytest.fixture
def one_client_round(tmp_path: Path):
    server, channel, stub, session, task = _start(tmp_path)
    yield server, channel, session, task
    channel.close()
    server.shutdown(grace_s=0.5)


def _update(server, value: float = 0.01) -> dict[str, np.ndarray]:
    return {"delta." + n[2:]: np.full(v.shape, value, np.float32) for n, v in server.coordinator.state.items()}


def _header(session, task, total_len: int, checksum=pb.CHECKSUM_XXH3_128) -> pb.UpdateHeader:
    return pb.UpdateHeader(protocol_version=PROTOCOL_VERSION, session=session, round=task.round, task_id=task.task_id,
                           n_samples=10, blob=pb.BlobHeader(total_len=total_len, checksum=checksum))


def _small(channel, message: bytes) -> pb.UpdateAck:
    return wire.BulkCalls.on(channel).submit_small_update(message, timeout=30)


def _snapshot(server) -> dict[str, bytes]:
    return {n: v.tobytes() for n, v in server.coordinator.state.items()}


def test_the_model_header_offers_xxh3_and_sha256_only_to_clients_that_need_it(one_client_round) -> None:
    server, channel, session, task = one_client_round
    header = task.model.header  # a client that did not list its checksums: both digests
    assert header.xxh3_128 == Checksum.XXH3_128.of(task.model.data)
    assert header.sha256 == Checksum.SHA256.of(task.model.data)
    stub = pb_grpc.CoordinatorStub(channel)
    modern = stub.GetTask(pb.GetTaskRequest(protocol_version=PROTOCOL_VERSION, session=session,
                                            checksums=[pb.CHECKSUM_XXH3_128]), timeout=10)
    assert modern.model.header.xxh3_128 == header.xxh3_128 and not modern.model.header.sha256
    fetched = list(wire.BulkCalls.on(channel).fetch_model(pb.FetchModelRequest(
        protocol_version=PROTOCOL_VERSION, session=session, round=task.round, task_id=task.task_id,
        checksums=[pb.CHECKSUM_XXH3_128]), timeout=10))
    assert fetched[0].header.xxh3_128 == header.xxh3_128 and not fetched[0].header.sha256


@pytest.mark.parametrize("how", ["small", "stream"])
def test_an_xxh3_update_moves_the_model_like_a_sha256_stream(tmp_path: Path, how: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    spilled: list[Path] = []
    real_spill = incoming_module.SpillFile
    monkeypatch.setattr(incoming_module, "SpillFile", lambda directory: spilled.append(directory) or real_spill(directory))
    finals = {}
    for variant in ("sha256-stream", how):
        server, channel, stub, session, task = _start(tmp_path / variant)
        try:
            update = _update(server)
            parts = codec.encode_parts(update)
            data = b"".join(parts)
            if variant == "sha256-stream":
                messages = [pb.UpdateChunk(header=_header(session, task, len(data), pb.CHECKSUM_SHA256)),
                            pb.UpdateChunk(data=data), pb.UpdateChunk(trailer=pb.BlobTrailer(sha256=Checksum.SHA256.of(data)))]
                ack = stub.SubmitUpdate(iter(messages), timeout=30)
            elif variant == "small":
                trailer = pb.BlobTrailer(xxh3_128=Checksum.XXH3_128.of(data))
                ack = _small(channel, wire.small_update_message(_header(session, task, len(data)), trailer, parts))
            else:
                messages = [pb.UpdateChunk(header=_header(session, task, len(data))),
                            *(pb.UpdateChunk(data=bytes(c)) for c in codec.iter_chunks(data, 100_000)),
                            pb.UpdateChunk(trailer=pb.BlobTrailer(xxh3_128=Checksum.XXH3_128.of(data)))]
                ack = stub.SubmitUpdate(iter(messages), timeout=30)
            assert ack.accepted
            assert server.wait(timeout=30)
            finals[variant] = _snapshot(server)
            assert server.coordinator.history[-1]["n_updates"] == 1
        finally:
            channel.close()
            server.shutdown(grace_s=0.5)
    assert finals["sha256-stream"] == finals[how]
    assert spilled == [], "an update within the inline limit was parked on disk"


def _refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_a_corrupt_small_update_is_refused_and_a_good_one_then_accepted(one_client_round) -> None:
    server, channel, session, task = one_client_round
    before = _snapshot(server)
    parts = codec.encode_parts(_update(server))
    data = bytearray(b"".join(parts))
    digest = Checksum.XXH3_128.of(bytes(data))
    data[-1] ^= 0x01
    flipped = wire.small_update_message(_header(session, task, len(data)), pb.BlobTrailer(xxh3_128=digest), [bytes(data)])
    code, details = _refusal(lambda: _small(channel, flipped))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "checksum mismatch (xxh3_128)" in details
    nan = _update(server)
    nan["delta.head.bias"][0] = np.nan
    nan_parts = codec.encode_parts(nan)
    nan_message = wire.small_update_message(
        _header(session, task, sum(len(p) for p in nan_parts)),
        pb.BlobTrailer(xxh3_128=Checksum.XXH3_128.of(b"".join(nan_parts))), nan_parts)
    code, details = _refusal(lambda: _small(channel, nan_message))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "NaN" in details
    assert _snapshot(server) == before
    good = wire.small_update_message(_header(session, task, len(data)),
                                     pb.BlobTrailer(xxh3_128=Checksum.XXH3_128.of(b"".join(parts))), parts)
    assert _small(channel, good).accepted
    assert server.wait(timeout=30)
    assert _snapshot(server) != before


def test_malformed_short_and_oversized_small_updates_are_refused(tmp_path: Path) -> None:
    server, channel, stub, session, task = _start(tmp_path, **{"federation.inline_model_max_bytes": 1000})
    try:
        code, details = _refusal(lambda: _small(channel, b"\x08\x01\x10"))  # not length-delimited fields
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed SmallUpdate" in details
        parts = codec.encode_parts(_update(server))
        data = b"".join(parts)
        trailer = pb.BlobTrailer(xxh3_128=Checksum.XXH3_128.of(data))
        code, details = _refusal(lambda: _small(channel, wire.small_update_message(
            _header(session, task, len(data)), trailer, parts)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "stream it with SubmitUpdate" in details
        code, details = _refusal(lambda: _small(channel, wire.small_update_message(
            _header(session, task, 500), trailer, [data[:100]])))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "truncated" in details
        code, details = _refusal(lambda: _small(channel, wire.small_update_message(
            _header(session, task, 500, checksum=7), trailer, [data[:500]])))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown checksum" in details
        assert server.coordinator.refusals["corrupt_blob"] >= 1
    finally:
        channel.close()
        server.shutdown(grace_s=0.5)
