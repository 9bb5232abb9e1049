"""The `ray` engine: the server process of the `grpc` engine, client daemons as Ray actors.

Each actor runs the real client daemon (`fedser_client.app.build_daemon`) and speaks real gRPC
to the server, so a federation can hold more clients than one box: `ray_address` joins an
existing Ray cluster (every node needs fedser installed, nothing else), without it Ray starts
a local one. The head prepares each client's data (features and labels from the feature cache,
never audio) and hands it to the actor through Ray's object store, so an actor runs on any node;
it keeps its local state (control variate, pseudo-label pool) in a temporary folder on that node
for the length of the run. Ray is an optional extra: `pip install 'fedser[ray]'`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedser_shared.errors import ConfigError
from fedser_shared.fsutil import atomic_write_text
from fedser_sim.grpc_engine import SimulationFailed, _tail, ended_cleanly, read_metrics, start_server

if TYPE_CHECKING:
    from fedser_client.prepare import PreparedData
    from fedser_shared.config import RunConfig

# client data travels through it: about 4 MB per 1,000 utterances of emobase features (988 float32)
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
CLIENTS_FILE = "ray_clients.json"  # in RUN/logs: which node each client ran on, and what it did


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'fedser[ray]'") from None
    return ray


def portable(prepared: PreparedData) -> PreparedData:
    """What a daemon needs of its prepared data, and no more: the features and labels, and the training
    rows' file names (the keys of its pseudo-label pool); not the feature table nor the listing of audio files."""
    return dataclasses.replace(prepared, table=None, listing=None)  # type: ignore[arg-type]


class ClientActor:
    """One client daemon; `run` blocks until the server says SHUTDOWN."""

    def run(self, server: str, prepared: PreparedData, config: RunConfig, name: str, log_level: str) -> dict[str, object]:
        import tempfile

        import ray
        import torch

        from fedser_client.app import build_daemon
        from fedser_shared.logging import configure_logging

        configure_logging(log_level)
        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory(prefix=f"fedser-{name}-") as state_dir:
            daemon = build_daemon(server, Path(state_dir), config, name, "cpu", connect_timeout_s=120, prepared=prepared)
            result = daemon.run()
        return {"name": name, "node_id": ray.get_runtime_context().get_node_id(), "trained": result.rounds_trained,
                "evaluated": result.rounds_evaluated, "shutdown": result.shutdown}


def prepare_all(config: RunConfig, client_dirs: list[Path]) -> dict[str, PreparedData]:
    """Each client's features (from its warm cache) and labels, split and normalised as its daemon would."""
    from fedser_client.local_store import LocalStore
    from fedser_client.prepare import prepare_client_data

    return {folder.name: portable(prepare_client_data(folder, config, LocalStore(folder).feature_cache_dir, folder.name))
            for folder in client_dirs}


def run_ray(config_path: Path, client_dirs: list[Path], run_dir: Path, rounds: int, on_progress: Callable[[list[dict[str, Any]]], None],
            timeout_s: float, ray_address: str | None = None, log_level: str = "warning",
            actor_resources: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Run the federation to its last round; returns the server's metrics records.

    `actor_resources`: custom Ray resources each client actor asks for, to place the clients on the
    nodes that declare them (e.g. `ray start --resources '{"fedser_client": 100}'` on the workers)."""
    from fedser_shared.config import load_run_config

    ray = _import_ray()
    config = load_run_config(config_path)
    prepared = prepare_all(config, client_dirs)
    if ray_address:
        ray.init(address=ray_address, log_to_driver=False)
    else:
        # "local": a Ray of its own, even where `ray start` left a cluster that a bare init() would join
        ray.init(address="local", include_dashboard=False, log_to_driver=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    server, actors, pending, reports = None, {}, {}, []
    state_dir, log_dir = run_dir / "server", run_dir / "logs"
    try:
        # on a cluster, the server listens on the address the cluster knows this node by
        host = ray.util.get_node_ip_address() if ray_address else "127.0.0.1"
        server, address = start_server(config_path, run_dir, log_level="info", bind=f"[{host}]:0" if ":" in host else f"{host}:0")
        data_refs = {name: ray.put(data) for name, data in prepared.items()}
        del prepared
        # num_cpus=0: a daemon mostly waits on the network; SPREAD places them over the cluster's nodes
        actor_class = ray.remote(num_cpus=0, max_restarts=0)(ClientActor)
        placement = {"resources": dict(actor_resources)} if actor_resources else {}
        actors = {name: actor_class.options(name=f"fedser-{name}", scheduling_strategy="SPREAD", **placement).remote()
                  for name in data_refs}
        pending = {actor.run.remote(address, data_refs[name], config, name, log_level): name for name, actor in actors.items()}
        deadline = time.monotonic() + timeout_s
        while True:
            metrics = read_metrics(state_dir)
            on_progress(metrics)
            if server.poll() is not None:
                if not ended_cleanly(server.returncode, len(metrics), rounds, state_dir):
                    raise SimulationFailed(f"the server exited with code {server.returncode} after {len(metrics)} of {rounds} "
                                           f"rounds: {_tail(log_dir / 'server.log', 1)}")
                return metrics
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.25)
            for ref in done:
                name = pending.pop(ref)
                try:
                    reports.append(ray.get(ref))
                except Exception as exc:  # an actor's failure arrives as a Ray error wrapping the daemon's
                    if len(read_metrics(state_dir)) < rounds:
                        raise SimulationFailed(f"client {name} failed: {str(exc).splitlines()[-1]}") from None
            if time.monotonic() > deadline:
                raise SimulationFailed(f"the run did not finish within {timeout_s:.0f} s")
    finally:
        if pending:  # clients still hearing SHUTDOWN after the server's last round
            done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=15)
            for ref in done:
                try:
                    reports.append(ray.get(ref))
                except Exception:  # noqa: BLE001 - the run's outcome is decided above; a late failure only lacks a report
                    pass
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except Exception:
                server.kill()
        for actor in actors.values():
            ray.kill(actor)
        ray.shutdown()
        if reports:
            atomic_write_text(log_dir / CLIENTS_FILE, json.dumps(sorted(reports, key=lambda r: str(r["name"])), indent=1))
