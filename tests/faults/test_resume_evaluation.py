"""A kill -9 during the last round's evaluation loses nothing: the resumed server evaluates the
checkpoint's round once clients are back, instead of finishing without it (docs/config.md: the
last round is always evaluated)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedser_server.state.store import StateStore
from fedser_shared.config import to_toml
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from tests.conftest import free_port
from tests.faults import federation, raw
from tests.server.test_file_state import wait_for_port

pytestmark = pytest.mark.timeout(180)


def _evaluate(stub, session: pb.Session, task: pb.Task) -> None:
    stub.SubmitEvaluation(pb.EvaluationReport(protocol_version=raw.V, session=session, round=task.round, task_id=task.task_id,
                                              num_classes=4, confusion=[2, 0, 0, 0, 0, 1, 1, 0, 0, 0, 2, 0, 0, 0, 0, 2],
                                              loss=0.5), timeout=10)


def test_a_kill_during_the_final_evaluation_is_evaluated_on_resume(tmp_path: Path) -> None:
    overrides = {"federation.rounds": 2, "federation.eval_every": 1000}  # only the last round is evaluated
    (tmp_path / "run.toml").write_text(to_toml(raw.small_config(**overrides)))
    port, state_dir = free_port(), tmp_path / "state"
    server = subprocess.Popen([sys.executable, *federation.serve_command(port, state_dir, tmp_path / "run.toml")], stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "server1.log", "w"))
    try:
        wait_for_port(port, server)
        channel, stub = raw.stub_for(port)
        session = raw.join(stub, "a", n_eval=8).session
        for _ in range(2):
            assert raw.answer(stub, session, raw.wait_task(stub, session)).accepted
        raw.wait_task(stub, session, kind=pb.TASK_KIND_EVALUATE)  # round 2's evaluation is out: kill now
        raw.wait_for(lambda: (StateStore(state_dir).load_global() or ({}, 0))[1] == 2, what="round 2's checkpoint")
        channel.close()
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    assert "uar" not in StateStore(state_dir).read_metrics()[-1]

    resumed = subprocess.Popen([sys.executable, *federation.serve_command(port, state_dir, None)], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server2.log", "w"))
    try:
        wait_for_port(port, resumed)
        channel, stub = raw.stub_for(port)
        session = raw.join(stub, "a", n_eval=8, client_id=session.client_id).session
        task = raw.wait_task(stub, session, kind=pb.TASK_KIND_EVALUATE)
        assert task.round == 2
        _evaluate(stub, session, task)
        assert raw.wait_task(stub, session, kind=pb.TASK_KIND_SHUTDOWN).round == 2
        channel.close()
        assert resumed.wait(timeout=60) == 0, (tmp_path / "server2.log").read_text()[-2000:]
    finally:
        if resumed.poll() is None:
            resumed.kill()
    metrics = StateStore(state_dir).read_metrics()
    assert [m["round"] for m in metrics] == [1, 2]
    assert metrics[-1]["uar"] == pytest.approx((1.0 + 0.5 + 1.0 + 1.0) / 4) and metrics[-1]["n_eval_clients"] == 1
    assert metrics[-1]["n_updates"] == 1 and metrics[-1]["resumed"] is True  # its training part: the checkpoint's record
