from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spawn() -> Iterator:
    """Start processes in their own process group; every one is killed when the test ends."""
    started: list[subprocess.Popen] = []

    def _spawn(args: list[str], log: Path, prefix: tuple[str, ...] = (), **kwargs) -> subprocess.Popen:
        """`prefix` runs the interpreter through another command (e.g. `ip netns exec NS`)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env", {})}
        proc = subprocess.Popen([*prefix, sys.executable, *args], cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, **kwargs)
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def fault_clients(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three client data dirs shared by the fault tests: their features are extracted once."""
    from tests.conftest import make_client_dir

    root = tmp_path_factory.mktemp("fault-clients")
    return [make_client_dir(root, f"client{i}", per_class=6, seed=i) for i in range(3)]


@pytest.fixture(scope="session")
def reference_model(tmp_path_factory: pytest.TempPathFactory, fault_clients: list[Path]) -> dict:
    """The final model of an uninterrupted run of `federation.SETTINGS` over `fault_clients`."""
    from tests.conftest import free_port
    from tests.faults import federation

    tmp = tmp_path_factory.mktemp("reference-run")
    config = federation.config()
    port = free_port()
    log = tmp / "server.log"
    server = subprocess.Popen([sys.executable, *federation.serve_command(port, tmp / "state", federation.write_config(tmp, config))],
                              cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    clients = federation.Clients(f"127.0.0.1:{port}", fault_clients, config)
    try:
        clients.start()
        assert server.wait(timeout=180) == 0, federation.log_tail(log)
        clients.join()
    finally:
        clients.stop()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
    assert federation.rounds_of(tmp / "state") == [1, 2, 3, 4] and clients.all_shut_down()
    return federation.final_model(tmp / "state")
