"""A fedser client written from proto/fedser/v1/coordinator.proto and docs/protocol.md alone.

Run as a script: `python proto_client.py PROTO_ROOT OUT_DIR HOST:PORT`. It compiles the .proto
into OUT_DIR, imports nothing of fedser, keeps gRPC's default 4 MiB receive limit, and goes
through a whole run: join, heartbeat, train (inline or streamed model, chunked update with its
checksum trailer), a late resubmission (refused: stale_round in the trailing metadata),
evaluate, shutdown, and a reflection v1 listing. Prints one JSON line; exits non-zero on a
deviation from the documented protocol.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import time

import grpc
import numpy as np
from grpc_tools import protoc

PROTOCOL_VERSION = 2
CHUNK = 1 << 20


def parse_safetensors(blob: bytes) -> dict[str, np.ndarray]:
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    data = blob[8 + n :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        assert entry["dtype"] == "F32", entry
        begin, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(data[begin:end], "<f4").reshape(entry["shape"])
    return tensors


def encode_safetensors(tensors: dict[str, np.ndarray]) -> bytes:
    header, parts, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name], "<f4")
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        parts.append(array.tobytes())
        offset += array.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(parts)


def update_for(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """delta.X for each w.X; dc.X for each c.X (SCAFFOLD only)."""
    update = {}
    for name, value in state.items():
        prefix, _, param = name.partition(".")
        if prefix == "w":
            update["delta." + param] = np.full(value.shape, 0.01, np.float32)
        elif prefix == "c":
            update["dc." + param] = np.zeros(value.shape, np.float32)
    return update


def main(proto_root: str, out: str, target: str) -> dict[str, object]:
    assert protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}", f"--grpc_python_out={out}",
                        "fedser/v1/coordinator.proto"]) == 0
    sys.path.insert(0, out)
    from fedser.v1 import coordinator_pb2 as pb
    from fedser.v1 import coordinator_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(target)  # default options: a 4 MiB receive limit
    stub = pb_grpc.CoordinatorStub(channel)
    # what Join must say is learned first, from Describe (no token, no session)
    info = stub.Describe(pb.DescribeRequest(protocol_version=PROTOCOL_VERSION), timeout=10)
    assert info.protocol_version == PROTOCOL_VERSION
    reply = stub.Join(pb.JoinRequest(protocol_version=PROTOCOL_VERSION, name="conformance", feature_name=info.feature_name,
                                     feature_dim=info.feature_dim, label_counts=[5] * info.num_classes, n_eval=4), timeout=10)
    session, result = reply.session, {"kinds": [], "inline": None}
    assert reply.settings.num_classes == 4 and reply.heartbeat_interval_s > 0
    assert stub.Heartbeat(pb.HeartbeatRequest(protocol_version=PROTOCOL_VERSION, session=session), timeout=10).round == 0

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task = stub.GetTask(pb.GetTaskRequest(protocol_version=PROTOCOL_VERSION, session=session), timeout=40)
        kind = pb.TaskKind.Name(task.kind)
        result["kinds"].append(kind)
        if task.kind == pb.TASK_KIND_SHUTDOWN:
            break
        if task.kind == pb.TASK_KIND_WAIT:
            time.sleep(task.retry_after_s)
            continue
        if task.HasField("model"):
            head, blob = task.model.header, task.model.data
            result["inline"] = True
        else:
            messages = list(stub.FetchModel(pb.FetchModelRequest(protocol_version=PROTOCOL_VERSION, session=session,
                                                                 round=task.round, task_id=task.task_id), timeout=60))
            head, blob = messages[0].header, b"".join(m.data for m in messages[1:])
            result["inline"] = False
        assert len(blob) == head.total_len and hashlib.sha256(blob).digest() == head.sha256
        state = parse_safetensors(blob)
        if task.kind == pb.TASK_KIND_TRAIN:
            update = encode_safetensors(update_for(state))
            header = pb.UpdateHeader(protocol_version=PROTOCOL_VERSION, session=session, round=task.round, task_id=task.task_id,
                                     n_samples=20, metrics=pb.TrainMetrics(loss=0.7, local_steps=1),
                                     blob=pb.BlobHeader(total_len=len(update)))

            def stream():
                yield pb.UpdateChunk(header=header)
                for start in range(0, len(update), CHUNK):
                    yield pb.UpdateChunk(data=update[start : start + CHUNK])
                yield pb.UpdateChunk(trailer=pb.BlobTrailer(sha256=hashlib.sha256(update).digest()))

            assert stub.SubmitUpdate(stream(), timeout=60).accepted
            try:
                stub.SubmitUpdate(stream(), timeout=60)
                raise AssertionError("a second update for one task was accepted")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.code()
                assert ("fedser-refusal", "stale_round") in tuple(exc.trailing_metadata() or ()), exc.trailing_metadata()
        elif task.kind == pb.TASK_KIND_EVALUATE:
            stub.SubmitEvaluation(pb.EvaluationReport(protocol_version=PROTOCOL_VERSION, session=session, round=task.round,
                                                      task_id=task.task_id, num_classes=4, confusion=[1] + [0] * 15,
                                                      loss=0.5), timeout=10)
    # reflection v1, spoken as bytes: ServerReflectionRequest{list_services: ""} is field 7
    call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    listing = b"".join(call(iter([b"\x3a\x00"]), timeout=10))
    result["reflection_v1_lists_coordinator"] = b"fedser.v1.Coordinator" in listing
    result["fedser_modules_imported"] = sorted(m for m in sys.modules if m.startswith("fedser_"))
    channel.close()
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
