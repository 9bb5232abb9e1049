"""Wire a server together: config -> strategy, store, round loop and its coordinator front, gRPC; run to the last round."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from pydantic import ValidationError

from fedser_server.clock import Clock
from fedser_server.core.dp import DpFedAvg
from fedser_server.core.strategy import Strategy, make_strategy
from fedser_server.engine.coordinator import Coordinator
from fedser_server.engine.loop import RoundLoop
from fedser_server.engine.served_state import give_back_free_heap
from fedser_server.security.tokens import TokenStore
from fedser_server.state.startup import prepare_state_dir
from fedser_server.state.store import StateStore
from fedser_server.transport.server import BoundServer, start_server
from fedser_server.transport.servicer import CoordinatorServicer
from fedser_shared.config import IDLE_POLL_JITTER, RunConfig, format_validation_error, load_run_config
from fedser_shared.errors import ConfigError, StateError
from fedser_shared.logging import get_logger
from fedser_shared.weights import initial_weights

log = get_logger(__name__)


@dataclass
class RunningServer:
    loop: RoundLoop
    bound: BoundServer
    rounds: threading.Thread = field(init=False)
    failure: Exception | None = None  # what stopped the rounds early, if anything did

    def __post_init__(self) -> None:
        self.rounds = threading.Thread(target=self._drive, name="fedser-rounds", daemon=True)

    @property
    def coordinator(self) -> Coordinator:
        return self.loop.front

    def _drive(self) -> None:
        try:
            self.loop.run()
        except Exception as exc:  # noqa: BLE001 - serve_until_done reports it as one line and a non-zero exit
            self.failure = exc
            log.error("run_failed", error=f"{type(exc).__name__}: {exc}", completed_round=self.coordinator.completed_round)
        else:
            c = self.coordinator
            log.info("run_finished" if c.finished else "run_stopped", completed_round=c.completed_round,
                     rounds=c.config.federation.rounds, stop_reason=self.loop.stop_reason)

    @property
    def port(self) -> int:
        return self.bound.port

    def wait(self, timeout: float | None = None) -> bool:
        self.rounds.join(timeout)
        return not self.rounds.is_alive()

    def shutdown(self, grace_s: float = 2.0) -> None:
        self.loop.stop()
        self.rounds.join(timeout=10)
        self.bound.stop(grace_s)
        self.loop.close()


def run_config_for(state_dir: Path, config_path: Path | None, overrides: dict[str, Any], resume: bool) -> RunConfig:
    """A fresh run reads --config and flags; a resumed run continues with the configuration it
    saved, changed only by flags given explicitly (e.g. more --rounds)."""
    saved = StateStore.saved_config_json(state_dir) if resume else None
    if saved is None:
        return load_run_config(config_path, overrides)
    if config_path is not None:
        raise ConfigError("--resume continues with the run's saved configuration; drop --config "
                          "(flags such as --rounds still apply)")
    tree = json.loads(saved)
    for dotted, value in overrides.items():
        if value is not None:
            section, key = dotted.split(".", 1)
            tree.setdefault(section, {})[key] = value
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"saved config in {state_dir}")) from None


def server_strategy(config: RunConfig) -> Strategy:
    """The run's strategy: DP-FedAvg under privacy.dp (its noise drawn from the OS's entropy: a seed that the
    clients know would let them take it off again), else the configured algorithm."""
    fed, privacy = config.federation, config.privacy
    if not privacy.dp_enabled:
        return make_strategy(fed.algorithm, fed.server_lr, fed.c_update)
    if privacy.adaptive_clip_quantile is not None:
        raise ConfigError("privacy.adaptive_clip_quantile is applied by the in-process engine only: over gRPC the "
                          "server would need each client's norm, which secure aggregation and distributed noise "
                          "hide; give a fixed privacy.clip_norm")
    return DpFedAvg(fed.server_lr, np.random.default_rng())


def build_loop(config: RunConfig, state_dir: Path, tokens: TokenStore | None = None, resume: bool = False,
               clock: Clock = time.monotonic) -> RoundLoop:
    prepare_state_dir(state_dir)  # interrupted writes removed, registry and history checked: before any use
    fed = config.federation
    strategy = server_strategy(config)
    weights = initial_weights(config.feature_dim, config.num_classes, config.model.hidden, fed.seed)
    loop = RoundLoop.open(config, strategy, weights, StateStore(state_dir), config.feature_dim, clock=clock, tokens=tokens,
                          resume=resume)
    del weights  # the served state holds its own copy (in memory, or in files for a large model)
    give_back_free_heap()
    return loop


def start(config: RunConfig, address: str, state_dir: Path, credentials: grpc.ServerCredentials | None = None,
          tokens: TokenStore | None = None, resume: bool = False, clock: Clock = time.monotonic) -> RunningServer:
    """Start serving. `tokens=None` is open enrolment (any client may join); the CLI decides.
    `clock` is the run's time (deadlines, client expiry): tests pass one they move by hand."""
    loop = build_loop(config, state_dir, tokens, resume, clock)
    coordinator = loop.front
    servicer = CoordinatorServicer(coordinator, config.federation.poll_timeout_s, config.admission)
    try:
        bound = start_server(servicer, address, credentials=credentials)
    except BaseException:
        loop.close()
        raise
    host = address.rsplit(":", 1)[0]
    loop.store.write_address(f"{host}:{bound.port}")
    log.info("server_listening", address=f"{host}:{bound.port}", rounds=config.federation.rounds,
             algorithm=config.federation.algorithm, min_clients=config.federation.min_clients,
             tls=credentials is not None, enrolment="tokens" if tokens is not None else "open",
             resumed_from_round=coordinator.completed_round)
    running = RunningServer(loop, bound)
    running.rounds.start()
    return running


def serve_until_done(server: RunningServer, shutdown_grace_s: float = 15.0) -> None:
    """Block until the last round ends, let clients hear SHUTDOWN, then stop serving; a run that
    stopped early (e.g. a checkpoint that could not be written) ends in a StateError."""
    server.wait()
    idle_s = server.coordinator.config.federation.idle_poll_s
    if idle_s is not None:  # a client away hears SHUTDOWN when it comes back: wait out the longest come-back time
        shutdown_grace_s += idle_s * IDLE_POLL_JITTER[1]
    server.coordinator.wait_for_shutdown_delivery(shutdown_grace_s)
    server.shutdown()
    if server.failure is not None:
        raise StateError(f"the run stopped: {type(server.failure).__name__}: {server.failure}; what is on disk "
                         "is intact, `serve --resume` continues from the last saved round")
