"""Wire a server together: config -> strategy, store, coordinator, gRPC; run to the last round."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from fedser_server.coordinator import Coordinator
from fedser_server.core.strategy import make_strategy
from fedser_server.state.store import StateStore
from fedser_server.transport.server import BoundServer, start_server
from fedser_server.transport.servicer import CoordinatorServicer
from fedser_shared.config import RunConfig
from fedser_shared.logging import get_logger
from fedser_shared.model import build_model, weights_of

log = get_logger(__name__)


@dataclass
class RunningServer:
    coordinator: Coordinator
    bound: BoundServer
    driver: threading.Thread

    @property
    def port(self) -> int:
        return self.bound.port

    def wait(self, timeout: float | None = None) -> bool:
        self.driver.join(timeout)
        return not self.driver.is_alive()

    def shutdown(self, grace_s: float = 2.0) -> None:
        self.coordinator.stop()
        self.driver.join(timeout=10)
        self.bound.stop(grace_s)
        self.coordinator.close()


def build_coordinator(config: RunConfig, state_dir: Path, client_timeout_s: float = 120.0) -> Coordinator:
    store = StateStore(state_dir)
    fed = config.federation
    strategy = make_strategy(fed.algorithm, fed.server_lr, fed.c_update)
    model = build_model(config.feature_dim, config.num_classes, config.model.hidden, config.model.dropout, fed.seed)
    return Coordinator(config, strategy, weights_of(model), store, config.feature_dim, client_timeout_s=client_timeout_s)


def start(config: RunConfig, address: str, state_dir: Path, credentials: grpc.ServerCredentials | None = None,
          client_timeout_s: float = 120.0) -> RunningServer:
    coordinator = build_coordinator(config, state_dir, client_timeout_s)
    servicer = CoordinatorServicer(coordinator, config.federation.poll_timeout_s)
    bound = start_server(servicer, address, credentials=credentials)
    host = address.rsplit(":", 1)[0]
    coordinator.store.write_address(f"{host}:{bound.port}")
    log.info("server_listening", address=f"{host}:{bound.port}", rounds=config.federation.rounds,
             algorithm=config.federation.algorithm, min_clients=config.federation.min_clients)
    driver = threading.Thread(target=coordinator.run, name="fedser-rounds", daemon=True)
    driver.start()
    return RunningServer(coordinator, bound, driver)


def serve_until_done(server: RunningServer, shutdown_grace_s: float = 15.0) -> None:
    """Block until the last round ends, let clients hear SHUTDOWN, then stop serving."""
    server.wait()
    server.coordinator.wait_for_shutdown_delivery(shutdown_grace_s)
    server.shutdown()
