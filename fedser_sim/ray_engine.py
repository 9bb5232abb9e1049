"""The `ray` engine: the server process of the `grpc` engine, client daemons as Ray actors.

Each actor runs the real client daemon (`fedser_client.app.build_daemon`) and speaks real gRPC
to the server, so a federation can hold more clients than one box: `ray_address` joins an
existing Ray cluster (every node needs fedser installed and the client dirs on a shared path);
without it, Ray starts a local one. Ray is an optional extra: `pip install 'fedser[ray]'`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedser_shared.errors import ConfigError
from fedser_sim.grpc_engine import SimulationFailed, _tail, read_metrics, start_server

LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024  # actors exchange only small results through Ray


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'fedser[ray]'") from None
    return ray


class ClientActor:
    """One client daemon; `run` blocks until the server says SHUTDOWN."""

    def run(self, server: str, data_dir: str, config_path: str, name: str, log_level: str) -> dict[str, object]:
        import torch

        from fedser_client.app import build_daemon
        from fedser_shared.config import load_run_config
        from fedser_shared.logging import configure_logging

        configure_logging(log_level)
        torch.set_num_threads(1)
        daemon = build_daemon(server, Path(data_dir), load_run_config(Path(config_path)), name, "cpu", connect_timeout_s=120)
        result = daemon.run()
        return {"name": name, "trained": result.rounds_trained, "evaluated": result.rounds_evaluated, "shutdown": result.shutdown}


def run_ray(config_path: Path, client_dirs: list[Path], run_dir: Path, rounds: int, on_progress: Callable[[list[dict]], None],
            timeout_s: float, ray_address: str | None = None, log_level: str = "warning") -> list[dict]:
    """Run the federation to its last round; returns the server's metrics records."""
    ray = _import_ray()
    if ray_address:
        ray.init(address=ray_address, log_to_driver=False)
        bind = "0.0.0.0:0"  # reachable from the cluster's nodes
    else:
        ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        bind = "127.0.0.1:0"
    server, address = start_server(config_path, run_dir, log_level="info", bind=bind)
    if ray_address:
        address = f"{ray.util.get_node_ip_address()}:{address.rsplit(':', 1)[1]}"
    state_dir, log_dir = run_dir / "server", run_dir / "logs"
    # num_cpus=0: a daemon mostly waits on the network; SPREAD places them over the cluster's nodes
    actor_class = ray.remote(num_cpus=0, max_restarts=0)(ClientActor)
    actors = [actor_class.options(name=f"fedser-{folder.name}", scheduling_strategy="SPREAD").remote() for folder in client_dirs]
    pending = {actor.run.remote(address, str(folder.resolve()), str(config_path.resolve()), folder.name, log_level): folder.name
               for actor, folder in zip(actors, client_dirs)}
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            metrics = read_metrics(state_dir)
            on_progress(metrics)
            if server.poll() is not None:
                if server.returncode != 0 or len(metrics) < rounds:
                    raise SimulationFailed(f"the server exited with code {server.returncode} after {len(metrics)} of {rounds} "
                                           f"rounds: {_tail(log_dir / 'server.log', 1)}")
                return metrics
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.25)
            for ref in done:
                name = pending.pop(ref)
                try:
                    ray.get(ref)
                except Exception as exc:  # an actor's failure arrives as a Ray error wrapping the daemon's
                    if len(read_metrics(state_dir)) < rounds:
                        raise SimulationFailed(f"client {name} failed: {str(exc).splitlines()[-1]}") from None
            if time.monotonic() > deadline:
                raise SimulationFailed(f"the run did not finish within {timeout_s:.0f} s")
    finally:
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=15)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except Exception:
                server.kill()
        for actor in actors:
            ray.kill(actor)
        ray.shutdown()
