"""Host the servicer, gRPC health and reflection on one grpc.Server."""

from __future__ import annotations

from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fedser_server.transport.servicer import CoordinatorServicer
from fedser_shared.errors import ConfigError
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc
from fedser_shared.transport import server_options

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Coordinator"].full_name


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
    pb_grpc.add_CoordinatorServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
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
