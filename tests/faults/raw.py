"""Speak the protocol by hand: a server in this process, clients as bare stubs (no training).

Also a script: `python -m tests.faults.raw hang-mid-upload TARGET NAME` joins, waits for a
training task, streams the header and first chunk of a good update and then hangs, so a
test can kill -9 a client in the middle of its upload.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np

from fedser_server import app as server_app
from fedser_server.security.tokens import TokenStore
from fedser_shared import PROTOCOL_VERSION, codec
from fedser_shared.config import load_run_config
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc
from fedser_shared.tensor_names import update_name

V = PROTOCOL_VERSION
LABELS = [5, 5, 5, 5]


def wait_for(predicate: Callable[[], bool], within_s: float = 120.0, what: str = "condition") -> None:
    """Poll until `predicate` holds; `within_s` only bounds a hang (a server's start-up took over 30 s at load ~20)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def small_config(**overrides: object):
    base = {"federation.rounds": 1, "federation.min_clients": 1, "federation.fraction": 1.0,
            "federation.poll_timeout_s": 1.0, "federation.round_timeout_s": 60.0, "federation.eval_every": 1000}
    base.update(overrides)
    return load_run_config(None, base)


def start(tmp: Path, tokens: TokenStore | None = None, credentials: grpc.ServerCredentials | None = None,
          resume: bool = False, clock: Callable[[], float] = time.monotonic, **overrides: object) -> server_app.RunningServer:
    """A server in this process; `clock` is its run's time (a `tests.manual_clock.ManualClock` to move it by hand)."""
    return server_app.start(small_config(**overrides), "127.0.0.1:0", tmp / "state", credentials, tokens, resume, clock=clock)


def stub_for(port: int, credentials: grpc.ChannelCredentials | None = None, host: str = "127.0.0.1") -> tuple[grpc.Channel, pb_grpc.CoordinatorStub]:
    target = f"{host}:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    return channel, pb_grpc.CoordinatorStub(channel)


def join(stub: pb_grpc.CoordinatorStub, name: str = "raw", token: str = "", client_id: str = "",
         label_counts: list[int] = LABELS, n_unlabeled: int = 0, n_eval: int = 0) -> pb.JoinReply:
    return stub.Join(pb.JoinRequest(protocol_version=V, token=token, name=name, feature_name="emobase", feature_dim=988,
                                    label_counts=label_counts, n_unlabeled=n_unlabeled, n_eval=n_eval, client_id=client_id),
                     timeout=10)


def wait_task(stub: pb_grpc.CoordinatorStub, session: pb.Session, kind: int = pb.TASK_KIND_TRAIN, within_s: float = 30) -> pb.Task:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        task = stub.GetTask(pb.GetTaskRequest(protocol_version=V, session=session), timeout=10)
        if task.kind == kind:
            return task
    raise AssertionError(f"no task of kind {kind} within {within_s} s")


def fetch(stub: pb_grpc.CoordinatorStub, session: pb.Session, task: pb.Task) -> dict[str, np.ndarray]:
    stream = stub.FetchModel(pb.FetchModelRequest(protocol_version=V, session=session, round=task.round, task_id=task.task_id), timeout=30)
    messages = list(stream)
    head = messages[0].header
    return codec.decode(codec.assemble(iter(m.data for m in messages[1:]), head.total_len, head.sha256))


def update_for(state: dict[str, np.ndarray], value: float = 0.01) -> dict[str, np.ndarray]:
    """A well-formed update for a global state: delta.* for w.*, dc.* for c.*."""
    return {update_name(n): np.full(v.shape, value, v.dtype) for n, v in state.items()}


def update_messages(session: pb.Session, task: pb.Task, tensors: dict[str, np.ndarray], n_samples: int = 10,
                    tamper: Callable[[list[bytes]], list[bytes]] | None = None, total_len: int | None = None,
                    round_index: int | None = None, metrics: pb.TrainMetrics | None = None) -> list[pb.UpdateChunk]:
    """Header, data chunks, checksum trailer; `tamper` changes the chunks after the checksum was taken."""
    blob = codec.encode_blob(tensors)
    header = pb.UpdateHeader(protocol_version=V, session=session, round=task.round if round_index is None else round_index,
                             task_id=task.task_id, n_samples=n_samples, metrics=metrics,
                             blob=pb.BlobHeader(total_len=blob.total_len if total_len is None else total_len))
    chunks = [bytes(c) for c in blob.chunks()]
    if tamper:
        chunks = tamper(chunks)
    return [pb.UpdateChunk(header=header), *(pb.UpdateChunk(data=c) for c in chunks),
            pb.UpdateChunk(trailer=pb.BlobTrailer(sha256=blob.sha256))]


def submit(stub: pb_grpc.CoordinatorStub, messages: list[pb.UpdateChunk] | Iterator[pb.UpdateChunk]) -> pb.UpdateAck:
    return stub.SubmitUpdate(iter(messages), timeout=30)


def answer_messages(stub: pb_grpc.CoordinatorStub, session: pb.Session, task: pb.Task) -> list[pb.UpdateChunk]:
    """A well-formed update stream for `task`, computed from the model it fetches (trivial local work)."""
    return update_messages(session, task, update_for(fetch(stub, session, task)))


def answer(stub: pb_grpc.CoordinatorStub, session: pb.Session, task: pb.Task) -> pb.UpdateAck:
    """Fetch the task's model and submit a well-formed update for it."""
    return submit(stub, answer_messages(stub, session, task))


def snapshot(server: server_app.RunningServer) -> dict[str, bytes]:
    return {n: v.tobytes() for n, v in server.coordinator.state.items()}


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _hang_mid_upload(target: str, name: str) -> None:
    channel = grpc.insecure_channel(target)
    stub = pb_grpc.CoordinatorStub(channel)
    reply = join(stub, name)
    task = wait_task(stub, reply.session, within_s=60)
    messages = answer_messages(stub, reply.session, task)

    def stream() -> Iterator[pb.UpdateChunk]:
        yield messages[0]
        yield messages[1]
        print("mid-upload", flush=True)
        while True:
            time.sleep(3600)

    stub.SubmitUpdate(stream(), timeout=3600)


if __name__ == "__main__":
    if sys.argv[1] == "hang-mid-upload":
        _hang_mid_upload(sys.argv[2], sys.argv[3])
