"""kill -9 of the server in each phase of a round, then `serve --resume`: the run ends with one
metrics line per round, in order, and on the same model as a run that was never interrupted
(full participation, deterministic training). Each kill lands at a chosen step, held by an
event or a crash point, not at a moment picked by the clock. A kill during the last round's evaluation
is evaluated on resume: the last line has its UAR and every client hears SHUTDOWN."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.faults import federation, raw

pytestmark = pytest.mark.timeout(300)

KILLED_IN_ROUND = 2
LAST_ROUND = federation.SETTINGS["federation.rounds"]
PHASES = ["waiting", "upload", "checkpoint-before-rename", "checkpoint-before-metrics", "evaluation", "final-evaluation"]


def _completed_round(state_dir: Path) -> int:
    progress = state_dir / "progress.json"
    return json.loads(progress.read_text())["completed_round"] if progress.exists() else 0


@pytest.mark.parametrize("phase", PHASES)
def test_kill_9_in_each_phase_then_resume_ends_like_an_uninterrupted_run(
        phase: str, tmp_path: Path, fault_clients: list[Path], reference_model: dict, spawn) -> None:
    config = federation.config()
    port, state_dir = free_port(), tmp_path / "state"
    crashpoint = (phase, KILLED_IN_ROUND) if phase.startswith("checkpoint") else None
    hold = {"upload": federation.Hold("upload", KILLED_IN_ROUND, clients=(0,)),
            "evaluation": federation.Hold("evaluation", KILLED_IN_ROUND),
            "final-evaluation": federation.Hold("evaluation", LAST_ROUND)}.get(phase)
    first_log, second_log = tmp_path / "server1.log", tmp_path / "server2.log"
    server = spawn(federation.serve_command(port, state_dir, federation.write_config(tmp_path, config), crashpoint), first_log)
    clients = federation.Clients(f"127.0.0.1:{port}", fault_clients, config, hold)
    try:
        if phase == "waiting":  # two of the three clients the run needs have joined
            clients.start(0, 1)
            raw.wait_for(lambda: first_log.read_text().count("client_joined") >= 2, 60, "two joins")
        elif phase == "upload":  # clients 1 and 2 delivered round 2, client 0 is about to
            clients.start()
            raw.wait_for(lambda: {(1, KILLED_IN_ROUND), (2, KILLED_IN_ROUND)} <= set(clients.accepted)
                         and hold is not None and hold.all_reached(), 150, "two round-2 updates")
        elif phase in ("evaluation", "final-evaluation"):  # every client holds its evaluation report
            clients.start()
            raw.wait_for(lambda: hold is not None and hold.all_reached(), 150, f"{phase}s")
        else:  # the server kills itself at the crash point
            clients.start()
            assert server.wait(timeout=150) == -signal.SIGKILL, federation.log_tail(first_log)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        if hold is not None:
            hold.release.set()

        at_kill = _completed_round(state_dir)
        assert at_kill == {"waiting": 0, "upload": 1, "checkpoint-before-rename": 1,
                           "checkpoint-before-metrics": 2}.get(phase, at_kill)
        if phase == "checkpoint-before-rename":
            assert list(state_dir.glob(".global.safetensors.*.tmp")), "the crash point left no temp file"

        resumed = spawn(federation.serve_command(port, state_dir, None), second_log)
        if phase == "waiting":
            clients.start(2)
        assert resumed.wait(timeout=180) == 0, federation.log_tail(second_log)
        clients.join()
    finally:
        if hold is not None:
            hold.release.set()
        clients.stop()

    assert federation.rounds_of(state_dir) == [1, 2, 3, 4]
    assert clients.all_shut_down(), clients.errors
    assert not list(state_dir.glob(".*.tmp"))
    federation.assert_same_model(federation.final_model(state_dir), reference_model)
    metrics = federation.metrics_of(state_dir)
    assert metrics[-1].get("uar") is not None, metrics[-1]  # the last round is always evaluated, a kill or not
    resumed_log = second_log.read_text()
    if phase == "checkpoint-before-rename":
        assert "interrupted_write_removed" in resumed_log
    if phase == "checkpoint-before-metrics":
        assert metrics[1].get("resumed") is True
