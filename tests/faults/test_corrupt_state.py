"""A client's saved c_i damaged between two rounds (a NaN, as the outside run wrote): the client
names the file, sets it aside and goes on with c_i at zero, and every round still gets every
client's update. (Before, each of its updates was refused `loss nan` and the run never ended.)
Damaged server state (checkpoint, registry) is refused at start: tests/server/test_state_integrity.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedser_client.local_store import LocalStore
from tests.conftest import free_port
from tests.faults import federation

pytestmark = pytest.mark.timeout(300)


def _nan_into_c_i(path: Path) -> None:
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start:start + 4] = np.array([np.nan], np.float32).tobytes()
    path.write_bytes(bytes(data))


def test_a_nan_in_a_client_c_i_is_set_aside_and_the_run_goes_on(tmp_path: Path, fault_clients: list[Path], spawn) -> None:
    config = federation.config(**{"federation.rounds": 3, "federation.algorithm": "scaffold", "federation.eval_every": 3})
    port, state_dir = free_port(), tmp_path / "state"
    log = tmp_path / "server.log"
    damaged: list[Path] = []

    def damage_after_round_1(client: int, round_index: int) -> None:
        if client == 0 and round_index == 1:
            path = LocalStore(fault_clients[0]).state_path
            _nan_into_c_i(path)
            damaged.append(path)

    server = spawn(federation.serve_command(port, state_dir, federation.write_config(tmp_path, config)), log)
    clients = federation.Clients(f"127.0.0.1:{port}", fault_clients, config, after_update=damage_after_round_1)
    try:
        clients.start()
        assert server.wait(timeout=200) == 0, federation.log_tail(log)
        clients.join()
    finally:
        clients.stop()
    assert damaged, "client 0 never finished round 1"
    metrics = federation.metrics_of(state_dir)
    assert [m["round"] for m in metrics] == [1, 2, 3]
    assert all(m["n_updates"] == 3 for m in metrics), metrics
    assert not any(m.get("refused") for m in metrics), metrics
    assert damaged[0].with_name(damaged[0].name + ".corrupt").exists()
    assert clients.all_shut_down(), clients.errors
