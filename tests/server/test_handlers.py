"""The hand-written method registration serves every RPC of the proto, with its streaming kind."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fedser_server.transport.server import SERVICE_NAME, coordinator_handlers
from fedser_server.transport.servicer import CoordinatorServicer
from fedser_server.transport.threaded import ThreadedHandlers
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb


def test_every_rpc_of_the_proto_has_a_handler_of_its_kind() -> None:
    methods = {m.name: m for m in pb.DESCRIPTOR.services_by_name["Coordinator"].methods}
    handlers = coordinator_handlers(CoordinatorServicer.__new__(CoordinatorServicer), ThreadedHandlers(ThreadPoolExecutor(1)))
    assert SERVICE_NAME == "fedser.v1.Coordinator" and set(handlers) == set(methods)
    for name, handler in handlers.items():
        assert (handler.request_streaming, handler.response_streaming) == (methods[name].client_streaming,
                                                                          methods[name].server_streaming), name
