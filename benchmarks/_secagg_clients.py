"""Clients of benchmarks/secagg.py in a process of their own: each does what the daemon does on the
wire minus training (Join, long-poll GetTask, send a ready update), plainly or through the secure
aggregation stages. The process lives across sessions: it reads one JSON command per line on stdin
({"target": ADDRESS, "secure": bool}), runs its clients against that server until it ends, and
prints one JSON line per session: the payload bytes its clients sent and received, their rounds,
and the seconds their calls took per method.

    python _secagg_clients.py FIRST_INDEX N_CLIENTS [NEIGHBOURS]
"""

from __future__ import annotations

import collections
import hashlib
import json
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "shared")]

from fedser_client.transport.secure import submit_securely  # noqa: E402
from fedser_server.core.strategy import make_strategy  # noqa: E402
from fedser_shared import PROTOCOL_VERSION, codec  # noqa: E402
from fedser_shared.config import RunConfig, load_run_config  # noqa: E402
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb  # noqa: E402
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc  # noqa: E402
from fedser_shared.refusal import retry_after_of  # noqa: E402
from fedser_shared.weights import initial_weights  # noqa: E402

CHUNK = 1 << 20
N_SAMPLES = 100


def make_update(config: RunConfig, index: int) -> dict[str, np.ndarray]:
    """Client `index`'s update: the shapes of FedAvg's update of the default MLP, small random values."""
    strategy = make_strategy("fedavg", 1.0, "paper")
    state = strategy.initial_state(initial_weights(config.feature_dim, config.num_classes, config.model.hidden, 0))
    rng = np.random.default_rng(index)
    return {name: rng.normal(0, 1e-3, t.shape).astype(np.float32) for name, t in strategy.expected_update(state).items()}


class Payload(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Counts the protobuf payload of every call (requests sent, replies received), not gRPC's framing,
    and the seconds the calls of each method took (a secure stage call returns when its stage closed)."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self._lock = threading.Lock()

    def _count(self, method: str, sent: int, call: Any, started: float) -> Any:
        reply = call.result()
        with self._lock:
            self.sent += sent
            self.received += reply.ByteSize()
            self.seconds[method.rsplit("/", 1)[-1]] += time.perf_counter() - started
        return call

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        started = time.perf_counter()
        return self._count(details.method, request.ByteSize(), continuation(details, request), started)

    def intercept_stream_unary(self, continuation: Callable, details: Any, requests: Iterator[Any]) -> Any:
        sizes: list[int] = []

        def counted() -> Iterator[Any]:
            for request in requests:
                sizes.append(request.ByteSize())
                yield request
        started = time.perf_counter()
        call = continuation(details, counted())
        call.result()
        return self._count(details.method, sum(sizes), call, started)


def plain_submit(stub: pb_grpc.CoordinatorStub, session: pb.Session, task: pb.Task, blob: bytes) -> None:
    header = pb.UpdateHeader(protocol_version=PROTOCOL_VERSION, session=session, round=task.round, task_id=task.task_id,
                             n_samples=N_SAMPLES, metrics=pb.TrainMetrics(loss=1.0), blob=pb.BlobHeader(total_len=len(blob)))

    def stream() -> Iterator[pb.UpdateChunk]:
        yield pb.UpdateChunk(header=header)
        for start in range(0, len(blob), CHUNK):
            yield pb.UpdateChunk(data=blob[start : start + CHUNK])
        yield pb.UpdateChunk(trailer=pb.BlobTrailer(sha256=hashlib.sha256(blob).digest()))

    stub.SubmitUpdate(stream(), timeout=120)


def run_client(target: str, index: int, update: dict[str, np.ndarray], config: RunConfig, secure: bool,
               payload: Payload, rounds_done: list[int]) -> None:
    channel = grpc.intercept_channel(grpc.insecure_channel(target, options=[
        ("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.use_local_subchannel_pool", 1)]), payload)
    stub = pb_grpc.CoordinatorStub(channel)
    blob = codec.encode(update)
    rng = np.random.default_rng(index)
    try:
        session = stub.Join(pb.JoinRequest(protocol_version=PROTOCOL_VERSION, name=f"c{index:03d}", feature_name="emobase",
                                           feature_dim=988, label_counts=[100, 100, 100, 100]),
                            timeout=300, wait_for_ready=True).session
        while True:
            try:
                task = stub.GetTask(pb.GetTaskRequest(protocol_version=PROTOCOL_VERSION, session=session), timeout=60)
                if task.kind == pb.TASK_KIND_SHUTDOWN:
                    return
                if task.kind != pb.TASK_KIND_TRAIN:
                    time.sleep(task.retry_after_s)
                    continue
                if secure:
                    submit_securely(stub, session, task, config, update, N_SAMPLES, rng)
                else:
                    while True:  # a busy server's refusal: the same update again after its retry-after, as the daemon does
                        try:
                            plain_submit(stub, session, task, blob)
                            break
                        except grpc.RpcError as busy:
                            if busy.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or retry_after_of(busy) is None:
                                raise
                            time.sleep(random.uniform(0.75, 1.25) * (retry_after_of(busy) or 0.0))
                rounds_done[0] += 1
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    raise
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:  # a busy server: retried as the daemon does
                    print(f"client {index}: {error.code().name} {error.details()}", file=sys.stderr, flush=True)
                time.sleep(random.uniform(0.75, 1.25) * (retry_after_of(error) or 0.2))
    except grpc.RpcError:
        return  # the session's server is gone: the session is over for this client
    finally:
        channel.close()


def main() -> None:
    first, count = int(sys.argv[1]), int(sys.argv[2])
    neighbours = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "all" else None
    config = load_run_config(None, {"privacy.secagg_neighbours": neighbours, "privacy.secure_aggregation": "secagg+",
                                    "federation.round_timeout_s": 120.0})
    updates = {i: make_update(config, i) for i in range(first, first + count)}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        payload, done = Payload(), [[0] for _ in updates]
        threads = [threading.Thread(target=run_client, args=(command["target"], i, u, config, command["secure"], payload, d))
                   for (i, u), d in zip(updates.items(), done, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(json.dumps({"sent": payload.sent, "received": payload.received, "client_rounds": sum(d[0] for d in done),
                          "seconds": payload.seconds}), flush=True)


if __name__ == "__main__":
    main()
