"""A real federation in one test process: an in-process server and client daemons on threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from fedser_client.app import build_daemon
from fedser_client.prepare import PreparedData
from fedser_client.transport.daemon import DaemonResult, TrainObserver
from fedser_server import app as server_app
from fedser_shared.config import RunConfig


def run_thread_federation(
    config: RunConfig, dirs: dict[str, Path], state_dir: Path,
    prepared: dict[str, PreparedData] | None = None,
    observer_for: Callable[[str], TrainObserver] | None = None,
    device: str = "cpu",
) -> tuple[server_app.RunningServer, dict[str, DaemonResult]]:
    """Run every round over loopback gRPC; returns the stopped server and each client's result."""
    server = server_app.start(config, "127.0.0.1:0", state_dir)
    daemons, threads, results = [], [], {}
    try:
        for name, data_dir in dirs.items():
            daemon = build_daemon(f"127.0.0.1:{server.port}", data_dir, config, name, device, connect_timeout_s=30,
                                  prepared=prepared[name] if prepared else None,
                                  observer=observer_for(name) if observer_for else None)
            daemons.append(daemon)
            thread = threading.Thread(target=lambda d=daemon, n=name: results.__setitem__(n, d.run()), daemon=True)
            thread.start()
            threads.append(thread)
        assert server.wait(timeout=240), "the federation did not finish"
        server.coordinator.wait_for_shutdown_delivery(10)
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for daemon in daemons:
            daemon.stop()
        server.shutdown()
    return server, results
