"""Host the servicer, gRPC health and reflection on one grpc.aio server, one port.

The server runs on an asyncio event loop in a thread of its own ("fedser-grpc"). GetTask,
Heartbeat and SubmitSmallUpdate run on the loop (a parked long-poll is a coroutine, so threads
do not grow with the number of joined clients); the blocking handlers run on a bounded pool ("fedser-rpc",
`Limits.max_workers`) through `threaded.ThreadedHandlers`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent import futures
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

from fedser_server.transport.servicer import CoordinatorServicer, PollRequest
from fedser_server.transport.threaded import ThreadedHandlers
from fedser_shared import wire
from fedser_shared.errors import ConfigError
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.transport import server_options

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Coordinator"].full_name
HEALTH_SERVICE_NAME = "grpc.health.v1.Health"
# grpc.reflection.v1 has the messages of v1alpha, field for field; grpcio-reflection ships only
# v1alpha, so the same servicer answers under both names (grpcurl and newer tools ask for v1)
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
T = TypeVar("T")


def _enable_reflection(server: grpc.aio.Server, service_names: tuple[str, ...]) -> None:
    servicer = ReflectionServicer((*service_names, reflection.SERVICE_NAME, REFLECTION_V1))
    handler = grpc.stream_stream_rpc_method_handler(servicer.ServerReflectionInfo,
                                                    reflection_pb2.ServerReflectionRequest.FromString,
                                                    reflection_pb2.ServerReflectionResponse.SerializeToString)
    for name in (reflection.SERVICE_NAME, REFLECTION_V1):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),))


def coordinator_handlers(servicer: CoordinatorServicer, threaded: ThreadedHandlers) -> dict[str, grpc.RpcMethodHandler]:
    """The generated registration, except that the bulk messages (the streams' data, a small
    update) are framed by `wire` (no protobuf copy of the tensors), and that the blocking
    handlers run on worker threads; every other message is protobuf as generated."""

    def unary(method, request, reply) -> grpc.RpcMethodHandler:  # type: ignore[no-untyped-def]
        read = request if callable(request) and not isinstance(request, type) else request.FromString
        return grpc.unary_unary_rpc_method_handler(method, read, reply.SerializeToString)

    return {
        "Describe": unary(servicer.Describe, pb.DescribeRequest, pb.ServerInfo),
        "Join": unary(threaded.unary_unary(servicer.Join), pb.JoinRequest, pb.JoinReply),
        "GetTask": grpc.unary_unary_rpc_method_handler(servicer.GetTask, PollRequest.read, wire.serialize),
        "FetchModel": grpc.unary_stream_rpc_method_handler(threaded.unary_stream(servicer.FetchModel),
                                                           pb.FetchModelRequest.FromString, wire.serialize),
        "SubmitUpdate": grpc.stream_unary_rpc_method_handler(
            threaded.stream_unary_opened(servicer.open_update, servicer.receive_update), wire.read_update_chunk,
            pb.UpdateAck.SerializeToString),
        "SubmitSmallUpdate": unary(servicer.SubmitSmallUpdate, wire.read_small_update, pb.UpdateAck),
        "SubmitEvaluation": unary(threaded.unary_unary(servicer.SubmitEvaluation), pb.EvaluationReport, pb.Ack),
        "Heartbeat": unary(servicer.Heartbeat, pb.HeartbeatRequest, pb.HeartbeatReply),
        "Leave": unary(threaded.unary_unary(servicer.Leave), pb.LeaveRequest, pb.Ack),
        # a secure-aggregation stage call waits on its worker thread until the stage closes
        "SecAggAdvertise": unary(threaded.unary_unary(servicer.SecAggAdvertise), pb.SecAggAdvertiseRequest, pb.SecAggPeers),
        "SecAggShare": unary(threaded.unary_unary(servicer.SecAggShare), pb.SecAggShareRequest, pb.SecAggSharesForYou),
        "SecAggMask": unary(threaded.unary_unary(servicer.SecAggMask), pb.SecAggMaskRequest, pb.SecAggUnmaskTask),
        "SecAggUnmask": unary(threaded.unary_unary(servicer.SecAggUnmask), pb.SecAggUnmaskShares, pb.Ack),
    }


class BoundServer:
    """The running server: its port, its event loop thread and its worker pool."""

    def __init__(self, loop: asyncio.AbstractEventLoop, loop_thread: threading.Thread, pool: futures.ThreadPoolExecutor,
                 servicer: CoordinatorServicer) -> None:
        self.loop, self._loop_thread, self._pool, self.servicer = loop, loop_thread, pool, servicer
        self.server: grpc.aio.Server | None = None
        self.health: HealthServicer | None = None
        self.port = 0

    def on_loop(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    async def _start(self, servicer: CoordinatorServicer, address: str, credentials: grpc.ServerCredentials | None) -> None:
        limits = servicer.limits
        self.server = server = grpc.aio.server(options=server_options(), maximum_concurrent_rpcs=limits.max_calls)
        handlers = coordinator_handlers(servicer, ThreadedHandlers(self._pool))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        server.add_registered_method_handlers(SERVICE_NAME, handlers)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        _enable_reflection(server, (SERVICE_NAME, HEALTH_SERVICE_NAME))
        try:
            self.port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise ConfigError(f"cannot listen on {address}: the address is malformed or the port is in use")
        await server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def _stop(self, grace_s: float) -> None:
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace_s)

    def stop(self, grace_s: float = 2.0) -> None:
        if self.loop.is_running():
            self.on_loop(self._stop(grace_s))
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)


def start_server(servicer: CoordinatorServicer, address: str,
                 credentials: grpc.ServerCredentials | None = None) -> BoundServer:
    """Start serving on `address` (port 0 picks a free port); returns the bound port."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run_loop() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run_loop, name="fedser-grpc", daemon=True)
    thread.start()
    ready.wait()
    pool = futures.ThreadPoolExecutor(max_workers=servicer.limits.max_workers, thread_name_prefix="fedser-rpc")
    bound = BoundServer(loop, thread, pool, servicer)
    try:
        bound.on_loop(bound._start(servicer, address, credentials))
    except BaseException:
        bound.stop(0)
        raise
    return bound
