"""The `grpc` engine: one server process and N client processes on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedser_server.state import layout
from fedser_shared.errors import FedserError


class SimulationFailed(FedserError):
    """A process of the simulated federation died or the run did not finish in time."""


@dataclass
class Federation:
    server: subprocess.Popen[bytes]
    clients: list[subprocess.Popen[bytes]]
    client_logs: list[Path]
    state_dir: Path
    log_dir: Path

    def all(self) -> list[subprocess.Popen[bytes]]:
        return [self.server, *self.clients]

    def terminate(self, grace_s: float = 10.0) -> None:
        for proc in self.all():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + grace_s
        for proc in self.all():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "33554432")
    env.setdefault("MALLOC_TRIM_THRESHOLD_", "536870912")
    return env


def start_server(config_path: Path, run_dir: Path, log_level: str = "info",
                 bind: str = "127.0.0.1:0") -> tuple[subprocess.Popen[bytes], str]:
    """Start the server process on `bind`; returns it and the address it listens on (from its state dir)."""
    state_dir, log_dir = run_dir / "server", run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    # a simulation is always a fresh run: the server refuses a state dir that holds one (it would need --resume)
    shutil.rmtree(state_dir, ignore_errors=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "fedser_server.cli", "serve", "--address", bind, "--state-dir", str(state_dir),
         "--config", str(config_path), "--insecure", "--log-level", log_level],
        stdout=subprocess.DEVNULL, stderr=open(log_dir / "server.log", "w"), env=_env())
    address_file = state_dir / "address"
    deadline = time.monotonic() + 120
    while not address_file.exists():
        if server.poll() is not None:
            raise SimulationFailed(f"the server exited with code {server.returncode}: {_tail(log_dir / 'server.log', 1)}")
        if time.monotonic() > deadline:
            server.kill()
            raise SimulationFailed("the server did not start listening within 120 s")
        time.sleep(0.05)
    return server, address_file.read_text().strip()


def launch(config_path: Path, client_dirs: list[Path], run_dir: Path, log_level: str = "info") -> Federation:
    server, address = start_server(config_path, run_dir, log_level)
    state_dir, log_dir = run_dir / "server", run_dir / "logs"
    clients, client_logs = [], []
    for folder in client_dirs:
        client_logs.append(log_dir / f"{folder.name}.log")
        clients.append(subprocess.Popen(
            [sys.executable, "-m", "fedser_client.cli", "join", "--server", address, "--data-dir", str(folder),
             "--name", folder.name, "--config", str(config_path), "--insecure", "--device", "cpu", "--threads", "1",
             "--connect-timeout", "120", "--log-level", log_level],
            stdout=subprocess.DEVNULL, stderr=open(client_logs[-1], "w"), env=_env()))
    return Federation(server, clients, client_logs, state_dir, log_dir)


def read_metrics(state_dir: Path) -> list[dict[str, Any]]:
    return layout.read_metrics(state_dir / layout.METRICS_FILE)  # a line being written is left out


def ended_cleanly(returncode: int, rounds_done: int, rounds: int, state_dir: Path) -> bool:
    """Whether the server ended the run as it should: every round, or stopped early on purpose (a privacy
    budget; the reason is in the state dir)."""
    return returncode == 0 and (rounds_done >= rounds or layout.read_stop_reason(state_dir) is not None)


def watch(federation: Federation, rounds: int, on_progress: Callable[[list[dict[str, Any]]], None], timeout_s: float) -> list[dict[str, Any]]:
    """Follow metrics.jsonl until the server exits; fail fast if any process dies early."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            metrics = read_metrics(federation.state_dir)
            on_progress(metrics)
            if federation.server.poll() is not None:
                if not ended_cleanly(federation.server.returncode, len(metrics), rounds, federation.state_dir):
                    raise SimulationFailed(f"the server exited with code {federation.server.returncode} after "
                                           f"{len(metrics)} of {rounds} rounds: {_tail(federation.log_dir / 'server.log', 1)}")
                return metrics
            for proc, log_path in zip(federation.clients, federation.client_logs):
                if proc.poll() not in (None, 0) and len(metrics) < rounds:
                    raise SimulationFailed(f"client {log_path.stem} exited with code {proc.returncode}: {_tail(log_path, 1)}")
            if time.monotonic() > deadline:
                raise SimulationFailed(f"the run did not finish within {timeout_s:.0f} s")
            time.sleep(0.1)  # often enough for the held-out scorer to read an evaluated round's checkpoint
    finally:
        for proc in federation.clients:
            try:
                proc.wait(timeout=15 if federation.server.poll() is not None else 0.01)
            except subprocess.TimeoutExpired:
                pass
        federation.terminate()
