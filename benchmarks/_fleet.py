"""A fleet of lightweight fedser clients in one process (grpc.aio), for the server benchmarks.

Each client does what the daemon does on the wire, minus training: Join, heartbeats, long-poll
GetTask, and on TRAIN takes the model as the daemon does (inline in the task when it is small,
else FetchModel, with `--fetch`) and streams a pre-made update blob (its data messages framed once per process
and shared, so that the fleet spends little CPU: the server sees N distinct clients, each
sending a full update, header, data, checksum trailer; the data only once the server granted
the upload a slot, as the daemon does). An upload refused with a time to come
back (all upload slots taken) is sent again then; other retryable failures are retried with
jittered backoff, as the daemon does. A WAIT with a come-back time is waited out; with
`--disconnect-after S` one of at least S seconds with the client's channel closed (its connection
gone from the server, no heartbeats meanwhile), a new one opened for the next poll, as the daemon
does against a server in idle polling. `--tls CA_PEM` dials with TLS. Prints one JSON line of
counts when all are done.

    python _fleet.py ADDRESS N_CLIENTS FIRST_INDEX WEIGHTS_SPEC_JSON [--fetch] [--own-connections]
                     [--disconnect-after S] [--tls CA_PEM]
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from fedser_shared import PROTOCOL_VERSION, codec, wire
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc
from fedser_shared.refusal import refusal_of, retry_after_of
from fedser_shared.transport import client_channel_options

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED}


def update_blob(spec: dict[str, list[int]]) -> codec.Blob:
    rng = np.random.default_rng(0)
    return codec.encode_blob({name: rng.standard_normal(shape, dtype=np.float32) * 1e-3 for name, shape in spec.items()})


async def submit_when_granted(submit_update: grpc.aio.StreamUnaryMultiCallable, messages: list) -> None:
    """The header, then the rest only once the server granted the upload a slot (the call's initial
    metadata), as the daemon sends (docs/protocol.md); a refused call raises with its trailers."""
    call = submit_update(timeout=3600)
    await call.write(messages[0])
    if await call.initial_metadata():  # a call refused at once ends with none
        try:
            for message in messages[1:]:
                await call.write(message)
            await call.done_writing()
        except asyncio.InvalidStateError:
            pass  # the call ended under the writes: its status says why
    await call



class Link:
    """One client's channel and the calls on it; `reconnect` swaps in a fresh channel."""

    def __init__(self, connect: Callable[[], grpc.aio.Channel]) -> None:
        self._connect = connect
        self.away = False
        self._open()

    def _open(self) -> None:
        self.channel = channel = self._connect()
        self.stub = pb_grpc.CoordinatorStub(channel)
        self.fetch_model = channel.unary_stream(wire.FETCH_MODEL, request_serializer=pb.FetchModelRequest.SerializeToString,
                                                response_deserializer=wire.read_model_chunk)
        self.submit_update = channel.stream_unary(wire.SUBMIT_UPDATE, request_serializer=wire.serialize,
                                                  response_deserializer=pb.UpdateAck.FromString)

    async def wait_away(self, seconds: float) -> None:
        """Wait with the channel closed, then open a new one."""
        self.away = True
        await self.channel.close()
        try:
            await asyncio.sleep(seconds)
        finally:
            self._open()
            self.away = False


async def one_client(link: Link, index: int, blob: codec.Blob, frames: list[bytes], fetch: bool,
                     counts: collections.Counter, latencies: list[float], disconnect_after_s: float) -> None:
    name = f"fleet{index:05d}"
    while True:
        try:
            reply = await link.stub.Join(pb.JoinRequest(
                protocol_version=PROTOCOL_VERSION, name=name, feature_name="emobase", feature_dim=988,
                label_counts=[3, 3, 2, 2], n_unlabeled=0, n_eval=0), timeout=60)
            break
        except grpc.aio.AioRpcError as exc:
            counts[f"join_{exc.code().name}"] += 1
            await asyncio.sleep(random.uniform(0.5, 2.0))
    session = reply.session
    counts["joined"] += 1
    poll_timeout_s = json.loads(reply.settings.run_config_json or "{}").get("federation", {}).get("poll_timeout_s", 20.0)

    async def heartbeats() -> None:
        while True:
            await asyncio.sleep(reply.heartbeat_interval_s or 10.0)
            if link.away:  # the next poll is the call that keeps the session
                counts["heartbeat_skipped_away"] += 1
                continue
            try:
                await link.stub.Heartbeat(pb.HeartbeatRequest(protocol_version=PROTOCOL_VERSION, session=session), timeout=10)
                counts["heartbeat_ok"] += 1
            except grpc.aio.AioRpcError as exc:
                counts[f"heartbeat_{exc.code().name}"] += 1

    beating = asyncio.create_task(heartbeats())
    backoff = 0.2
    try:
        while True:
            try:
                task = await link.stub.GetTask(pb.GetTaskRequest(protocol_version=PROTOCOL_VERSION, session=session),
                                         timeout=poll_timeout_s + 15)
            except grpc.aio.AioRpcError as exc:
                counts[f"gettask_{exc.code().name}"] += 1
                if exc.code() not in RETRYABLE:
                    return
                await asyncio.sleep(random.uniform(0.5, 1.0) * backoff)
                backoff = min(10.0, backoff * 2)
                continue
            if task.kind == pb.TASK_KIND_SHUTDOWN:
                counts["shutdown"] += 1
                return
            if task.kind != pb.TASK_KIND_TRAIN:
                if task.retry_after_s >= disconnect_after_s:
                    counts["waited_disconnected"] += 1
                    await link.wait_away(task.retry_after_s)
                elif task.retry_after_s > 0:
                    counts["told_to_wait"] += 1
                    await asyncio.sleep(task.retry_after_s)
                continue
            started = time.perf_counter()
            try:
                if fetch and task.HasField("model"):
                    counts["model_inline"] += 1
                elif fetch:
                    async for _ in link.fetch_model(pb.FetchModelRequest(
                            protocol_version=PROTOCOL_VERSION, session=session, round=task.round, task_id=task.task_id), timeout=600):
                        pass

                header = pb.UpdateChunk(header=pb.UpdateHeader(
                    protocol_version=PROTOCOL_VERSION, session=session, round=task.round, task_id=task.task_id, n_samples=10,
                    metrics=pb.TrainMetrics(loss=0.0), blob=pb.BlobHeader(total_len=blob.total_len)))
                trailer = pb.UpdateChunk(trailer=pb.BlobTrailer(sha256=blob.sha256))
                busy_backoff = 0.2
                while True:  # all upload slots taken: send it again when the server says (jittered), as the daemon does
                    try:
                        await submit_when_granted(link.submit_update, [header, *frames, trailer])
                        break
                    except grpc.aio.AioRpcError as exc:
                        retry_after_s = retry_after_of(exc)
                        if retry_after_s is not None:
                            counts[f"update_{refusal_of(exc)}"] += 1
                            await asyncio.sleep(random.uniform(0.75, 1.25) * min(retry_after_s, 60.0))
                        elif (exc.code() == grpc.StatusCode.INTERNAL and refusal_of(exc) is None
                              and time.time() < task.deadline_unix_s):
                            # grpc.aio reports a refusal that ends the call while this client still writes as
                            # INTERNAL, without the server's status and trailers (grpc/grpc#36066): the same
                            # refusal, with no time to come back
                            counts["update_INTERNAL"] += 1
                            await asyncio.sleep(random.uniform(0.5, 1.0) * busy_backoff)
                            busy_backoff = min(10.0, busy_backoff * 2)
                        else:
                            raise
                counts["update_ok"] += 1
                latencies.append(time.perf_counter() - started)
                backoff = 0.2
            except grpc.aio.AioRpcError as exc:
                counts[f"update_{exc.code().name}"] += 1
                await asyncio.sleep(random.uniform(0.5, 1.0) * backoff)
                backoff = min(10.0, backoff * 2)
    finally:
        beating.cancel()


async def fleet(address: str, n: int, first: int, spec: dict[str, list[int]], fetch: bool, own_connections: bool = False,
                disconnect_after_s: float = float("inf"), ca_pem: bytes | None = None) -> None:
    blob = update_blob(spec)
    frames = [wire.data_message(chunk) for chunk in blob.chunks()]
    counts: collections.Counter = collections.Counter()
    latencies: list[float] = []
    # one channel per client; channels of one process share one TCP connection unless
    # --own-connections (a local subchannel pool each), as clients on separate machines have
    options = client_channel_options() + ([("grpc.use_local_subchannel_pool", 1)] if own_connections else [])
    credentials = grpc.ssl_channel_credentials(ca_pem) if ca_pem else None

    def connect() -> grpc.aio.Channel:
        if credentials is not None:
            return grpc.aio.secure_channel(address, credentials, options)
        return grpc.aio.insecure_channel(address, options)

    links = [Link(connect) for _ in range(n)]

    def report_and_exit() -> None:  # stopped before the run ended: what happened so far is the result
        print(json.dumps({"counts": dict(counts), "update_seconds": latencies}), flush=True)
        os._exit(0)

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, report_and_exit)
    await asyncio.gather(*(one_client(link, first + i, blob, frames, fetch, counts, latencies, disconnect_after_s)
                           for i, link in enumerate(links)))
    for link in links:
        await link.channel.close()
    print(json.dumps({"counts": dict(counts), "update_seconds": latencies}), flush=True)


def _option(flag: str) -> str | None:
    return sys.argv[sys.argv.index(flag) + 1] if flag in sys.argv else None


if __name__ == "__main__":
    disconnect_after, ca = _option("--disconnect-after"), _option("--tls")
    asyncio.run(fleet(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), "--fetch" in sys.argv,
                      "--own-connections" in sys.argv, float(disconnect_after) if disconnect_after else float("inf"),
                      Path(ca).read_bytes() if ca else None))
