"""A device that goes to sleep (SIGSTOP) is declared dead; when it wakes it joins again with
the same client id and the same SCAFFOLD c_i, and the run completes consistently."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedser_client.app import build_daemon
from fedser_client.transport.daemon import DaemonResult
from fedser_shared import wire
from fedser_shared.config import to_toml
from tests.faults import raw
from tests.manual_clock import ManualClock

pytestmark = pytest.mark.timeout(240)



def test_a_sleeping_client_is_declared_dead_and_rejoins_with_its_id_and_c_i(tmp_path: Path, client_dirs: list[Path], spawn) -> None:
    overrides = {"federation.rounds": 3, "federation.min_clients": 2, "federation.algorithm": "scaffold"}
    config = raw.small_config(**overrides)
    (tmp_path / "run.toml").write_text(to_toml(config))
    # the server's clock moves by hand: the sleeper is dead once the test moves it past the client
    # timeout (and not past the round's deadline, so round 2 waits for the sleeper to come back)
    clock, client_timeout_s = ManualClock(), 30.0
    server = raw.start(tmp_path, clock=clock, **{**overrides, "server.client_timeout_s": client_timeout_s})
    awake = build_daemon(f"127.0.0.1:{server.port}", client_dirs[0], config, "awake", connect_timeout_s=60)
    # round 2 cannot end before the sleeper is asleep: the awake client trains rounds past 1 only once
    # released (without this a fast box ran all three rounds before the test could stop the sleeper)
    awake_may_go_on = threading.Event()
    train = awake._train

    def train_once_released(received: wire.ReceivedTask, result: DaemonResult) -> None:
        if received.task.round >= 2:
            awake_may_go_on.wait(150)
        train(received, result)

    awake._train = train_once_released  # type: ignore[method-assign]
    thread = threading.Thread(target=awake.run, daemon=True)
    thread.start()
    sleeper_dir = client_dirs[1]
    sleeper = spawn(["-m", "fedser_client.cli", "join", "--server", f"127.0.0.1:{server.port}", "--data-dir", str(sleeper_dir),
                     "--name", "sleeper", "--insecure", "--device", "cpu", "--threads", "1", "--connect-timeout", "60"],
                    tmp_path / "sleeper.log")
    try:
        raw.wait_for(lambda: server.coordinator.completed_round >= 1, 150, "round 1")
        store = sleeper_dir / ".fedser"
        client_id = json.loads((store / "client.json").read_text())["client_id"]
        # the client writes c_i after the server's ack, which can come after the round closes
        raw.wait_for(lambda: (store / "local_state.safetensors").exists(), 30, "the sleeper's c_i")
        sleeper.send_signal(signal.SIGSTOP)
        c_i_asleep = (store / "local_state.safetensors").read_bytes()
        clock.advance(client_timeout_s + 1)
        assert client_id not in {c.client_id for c in server.coordinator.alive_clients()}, "the sleeper is dead"
        awake_may_go_on.set()
        sleeper.send_signal(signal.SIGCONT)
        assert server.wait(timeout=150), "the run did not finish"
        assert sleeper.wait(timeout=60) == 0, (tmp_path / "sleeper.log").read_text()[-2000:]
    finally:
        awake_may_go_on.set()
        awake.stop()
        server.shutdown(grace_s=0.2)
    log = (tmp_path / "sleeper.log").read_text()
    assert "session_lost_rejoining" in log and "expired" in log
    assert json.loads((store / "client.json").read_text())["client_id"] == client_id
    assert sorted(c.name for c in server.coordinator.registry.clients.values()) == ["awake", "sleeper"]
    assert server.coordinator.registry.clients[client_id].participations == 3
    # The c_i the sleeper held when it fell asleep was carried on: SCAFFOLD's server control
    # variate equals the mean of the clients' c_i only if no client lost or reset its own.
    assert c_i_asleep != (store / "local_state.safetensors").read_bytes()
    controls = [load_file(str(d / ".fedser" / "local_state.safetensors")) for d in (client_dirs[0], sleeper_dir)]
    for name, value in server.coordinator.state.items():
        if name.startswith("c."):
            np.testing.assert_allclose(value, (controls[0][name] + controls[1][name]) / 2, rtol=1e-4, atol=1e-6)
