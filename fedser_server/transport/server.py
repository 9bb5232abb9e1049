"""Host the servicer, gRPC health and reflection on one grpc.Server."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from fedser_server.transport.servicer import CoordinatorServicer
from fedser_shared import wire
from fedser_shared.errors import ConfigError
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.transport import server_options

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Coordinator"].full_name
# grpc.reflection.v1 has the messages of v1alpha, field for field; grpcio-reflection ships only
# v1alpha, so the same servicer answers under both names (grpcurl and newer tools ask for v1)
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _enable_reflection(server: grpc.Server, service_names: tuple[str, ...]) -> None:
    servicer = reflection.ReflectionServicer((*service_names, reflection.SERVICE_NAME, REFLECTION_V1))
    handler = grpc.stream_stream_rpc_method_handler(servicer.ServerReflectionInfo,
                                                    reflection_pb2.ServerReflectionRequest.FromString,
                                                    reflection_pb2.ServerReflectionResponse.SerializeToString)
    for name in (reflection.SERVICE_NAME, REFLECTION_V1):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),))


def coordinator_handlers(servicer: CoordinatorServicer) -> dict[str, grpc.RpcMethodHandler]:
    """The generated registration, except that the bulk messages (the streams' data, a small
    update) are framed by `wire` (no protobuf copy of the tensors); every other message is
    protobuf as generated."""

    def unary(method, request, reply) -> grpc.RpcMethodHandler:  # type: ignore[no-untyped-def]
        read = request if callable(request) and not isinstance(request, type) else request.FromString
        return grpc.unary_unary_rpc_method_handler(method, read, reply.SerializeToString)

    return {
        "Join": unary(servicer.Join, pb.JoinRequest, pb.JoinReply),
        "GetTask": grpc.unary_unary_rpc_method_handler(servicer.GetTask, pb.GetTaskRequest.FromString, wire.serialize),
        "FetchModel": grpc.unary_stream_rpc_method_handler(servicer.FetchModel, pb.FetchModelRequest.FromString, wire.serialize),
        "SubmitUpdate": grpc.stream_unary_rpc_method_handler(servicer.SubmitUpdate, wire.read_update_chunk,
                                                             pb.UpdateAck.SerializeToString),
        "SubmitSmallUpdate": unary(servicer.SubmitSmallUpdate, wire.read_small_update, pb.UpdateAck),
        "SubmitEvaluation": unary(servicer.SubmitEvaluation, pb.EvaluationReport, pb.Ack),
        "Heartbeat": unary(servicer.Heartbeat, pb.HeartbeatRequest, pb.HeartbeatReply),
        "Leave": unary(servicer.Leave, pb.LeaveRequest, pb.Ack),
    }


class BoundServer:
    def __init__(self, server: grpc.Server, port: int, health_servicer: health.HealthServicer) -> None:
        self.server, self.port, self.health = server, port, health_servicer

    def stop(self, grace_s: float = 2.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()


def start_server(servicer: CoordinatorServicer, address: str,
                 credentials: grpc.ServerCredentials | None = None) -> BoundServer:
    """Start serving on `address` (port 0 picks a free port); returns the bound port.

    The pool is sized by the servicer's limits, which keep long-polls and uploads from taking
    all of it."""
    max_workers = servicer.limits.max_workers
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="fedser-rpc"),
                         options=server_options(), maximum_concurrent_rpcs=max_workers * 4)
    handlers = coordinator_handlers(servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _enable_reflection(server, (SERVICE_NAME, health.SERVICE_NAME))
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {address}: the address is malformed or the port is in use")
    server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return BoundServer(server, port, health_servicer)
