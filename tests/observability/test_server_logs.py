"""Issue 14 §3: what `fedser-server serve` writes to its log stream is JSON, grpc's own lines
included; the log says when a SIGTERM arrived and how the run ended; `status` shows a client's
real last contact; a round's duration leaves out the wait for clients (reported on its own)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from fedser_server.observability.snapshot import load_snapshot
from fedser_server.observability.status import summary
from fedser_server.security.certs import write_dev_pki
from tests.faults import raw

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]


def test_every_log_line_is_json_including_grpc_core_and_the_sigterm(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    write_dev_pki(pki, [], [])
    state = tmp_path / "state"
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "fedser_server.cli", "serve", "--state-dir", str(state), "--address", "127.0.0.1:0",
             "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"), "--open-enrolment", "--rounds", "1"],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        raw.wait_for(lambda: (state / "address").exists() or server.poll() is not None, what="the server to listen")
        port = int((state / "address").read_text().strip().rsplit(":", 1)[1])
        channel, stub = raw.stub_for(port)  # plaintext against TLS: grpc's core logs a handshake failure
        assert raw.code_of(lambda: raw.join(stub, "plain"))[0] == grpc.StatusCode.UNAVAILABLE
        channel.close()
        raw.wait_for(lambda: "andshake" in log_path.read_text(), what="grpc's handshake line")
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # every line parses
    assert all(isinstance(e, dict) and "event" in e for e in events)
    assert any(e.get("source") == "grpc" and "andshake" in e.get("message", "") for e in events)
    names = [e["event"] for e in events]
    assert "signal_received" in names and "run_stopped" in names
    assert next(e for e in events if e["event"] == "signal_received")["signal"] == "SIGTERM"


def test_status_shows_real_last_contact_and_rounds_report_the_wait_apart(tmp_path: Path) -> None:
    server = raw.start(tmp_path, **{"federation.rounds": 2})
    channel, stub = raw.stub_for(server.port)
    try:
        raw.wait_for(lambda: server.coordinator.waiting_for_clients, what="the server to wait for clients")
        session = raw.join(stub, "raw").session
        joined_at = server.coordinator.registry.clients[session.client_id].joined_at
        assert raw.answer(stub, session, raw.wait_task(stub, session)).accepted
        task = raw.wait_task(stub, session)
        heard = time.time()
        assert raw.answer(stub, session, task).accepted
        assert server.wait(timeout=30)
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
    info = summary(load_snapshot(tmp_path / "state"))
    (client,) = info["clients"]
    assert joined_at < heard <= client["last_seen"]
    first = server.coordinator.history[0]
    assert first["wait_seconds"] > 0
