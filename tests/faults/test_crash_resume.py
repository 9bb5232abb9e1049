"""kill -9 the server in the middle of a round, `serve --resume`: the run finishes with every
round applied exactly once, and the clients find their way back by themselves."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedser_client.app import build_daemon
from fedser_shared.config import to_toml
from tests.conftest import free_port
from tests.faults import raw

pytestmark = pytest.mark.timeout(240)


def _digest(state: dict[str, np.ndarray]) -> str:
    return hashlib.sha256(b"".join(state[k].tobytes() for k in sorted(state))).hexdigest()



def test_kill_9_mid_round_then_resume_applies_every_round_exactly_once(tmp_path: Path, client_dirs: list[Path], spawn) -> None:
    config = raw.small_config(**{"federation.rounds": 4, "federation.min_clients": 3, "federation.eval_every": 2})
    (tmp_path / "run.toml").write_text(to_toml(config))
    port, state_dir = free_port(), tmp_path / "state"
    serve = ["-m", "fedser_server.cli", "serve", "--insecure", "--address", f"127.0.0.1:{port}", "--state-dir", str(state_dir)]
    server = spawn([*serve, "--config", str(tmp_path / "run.toml")], tmp_path / "server1.log")

    records: dict[str, list] = {}
    hold_round_3 = threading.Event()
    daemons, threads, results = [], [], {}
    for i, data_dir in enumerate(client_dirs):
        name = f"client{i}"
        records[name] = []

        def observe(round_index, global_state, update, report, _name=name):
            records[_name].append((round_index, global_state, update, report.metrics.n_samples))

        daemon = build_daemon(f"127.0.0.1:{port}", data_dir, config, name, observer=observe, connect_timeout_s=60)
        if i == 0:  # client0 is caught mid-upload of round 3 when the server dies
            send = daemon._update_messages

            def held(task, blob, report, _send=send):
                if task.round == 3:
                    hold_round_3.wait(60)
                return _send(task, blob, report)

            daemon._update_messages = held
        daemons.append(daemon)
        thread = threading.Thread(target=lambda d=daemon, n=name: results.__setitem__(n, d.run()), daemon=True)
        thread.start()
        threads.append(thread)
    try:
        accepted_in_3 = lambda: sum(1 for n in ("client1", "client2") for r in records[n] if r[0] == 3)  # noqa: E731
        raw.wait_for(lambda: accepted_in_3() == 2, 150, "two updates of round 3")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        hold_round_3.set()
        killed_at = json.loads((state_dir / "progress.json").read_text())["completed_round"]
        assert killed_at == 2
        resumed = spawn([*serve, "--resume"], tmp_path / "server2.log")
        assert resumed.wait(timeout=150) == 0, (tmp_path / "server2.log").read_text()[-2000:]
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for daemon in daemons:
            daemon.stop()

    metrics = [json.loads(line) for line in (state_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3, 4]
    assert all(result.shutdown for result in results.values()) and len(results) == 3
    log = (tmp_path / "server2.log").read_text()
    assert '"resumed"' in log and "client_joined" in log
    final = {k: v for k, v in load_file(str(state_dir / "global.safetensors")).items()}

    # Replay the run from what the clients saw: per round, each client's last accepted update
    # (round 3's were sent twice: before the kill, lost with the server's memory, and after).
    last: dict[tuple[int, str], tuple] = {}
    for name, entries in records.items():
        for round_index, global_state, update, n_samples in entries:
            last[(round_index, name)] = (global_state, update, n_samples)
    theta = last[(1, "client0")][0]
    for round_index in range(1, 5):
        contributions = [last[(round_index, n)] for n in records]
        assert all(_digest(g) == _digest(theta) for g, _, _ in contributions), f"round {round_index} started from another model"
        total = sum(n for _, _, n in contributions)
        theta = {k: (sum(n * (v.astype(np.float64) + u["delta." + k[2:]]) for (_, u, n) in contributions) / total).astype(np.float32)
                 for k, v in theta.items()}
    for name, value in final.items():
        np.testing.assert_allclose(value, theta[name], rtol=1e-5, atol=1e-6)
