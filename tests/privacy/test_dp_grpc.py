"""DP-FedAvg over real gRPC in central mode, with bare-stub clients that send a known update: the server clips
each update on receipt and adds z*C to the sum once per round, metrics.jsonl, status and Prometheus show the
accountant's epsilon, a budget ends the run cleanly (exit 0, one line, clients told to leave, checkpoint whole),
and a resumed run goes on spending from the rounds it released."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedser_server import app as server_app
from fedser_server.cli import app as server_cli
from fedser_server.core.dp import epsilon, epsilon_of_rounds
from fedser_server.observability.metrics import registry_for
from fedser_server.state.store import StateStore
from fedser_shared.cli import run_cli
from fedser_shared.config import RunConfig, to_toml
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.weights import initial_weights
from tests.conftest import free_port
from tests.faults import raw

pytestmark = pytest.mark.timeout(240)

CLIENTS = 4
VALUE = 0.01  # every element of every client's update: its norm is far above the clip norms below


def dp_config(**overrides: object) -> RunConfig:
    """Four clients, two sampled per round (q = 0.5 while all four are there), central DP."""
    return raw.small_config(**{"federation.start_clients": CLIENTS, "federation.min_clients": 2, "federation.fraction": 0.5,
                               "privacy.dp": "central", "privacy.clip_norm": 0.1, **overrides})


class RawClient:
    """A client that joins, answers every training task with the same update until told to leave."""

    def __init__(self, port: int, name: str, client_id: str = "") -> None:
        self.port, self.name, self.client_id = port, name, client_id
        self.trained: list[int] = []
        self.ending = ""  # "shutdown" once the server said the run is over
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        channel, stub = raw.stub_for(self.port)
        try:
            session = raw.join(stub, self.name, client_id=self.client_id).session
            self.client_id = session.client_id
            while True:
                task = stub.GetTask(pb.GetTaskRequest(protocol_version=raw.V, session=session), timeout=10)
                if task.kind == pb.TASK_KIND_SHUTDOWN:
                    self.ending = "shutdown"
                    return
                if task.kind == pb.TASK_KIND_TRAIN:
                    model = raw.fetch(stub, session, task)
                    raw.submit(stub, raw.update_messages(session, task, raw.update_for(model, VALUE)))
                    self.trained.append(task.round)
        except grpc.RpcError as exc:
            self.ending = exc.code().name
        finally:
            channel.close()


def run_in_process(config: RunConfig, state_dir: Path, client_ids: list[str] | None = None,
                   resume: bool = False) -> tuple[server_app.RunningServer, list[RawClient]]:
    server = server_app.start(config, "127.0.0.1:0", state_dir, resume=resume)
    ids = client_ids or [""] * CLIENTS
    clients = [RawClient(server.port, f"raw{i}", ids[i]) for i in range(CLIENTS)]
    try:
        assert server.wait(timeout=120), "the run did not finish"
        for client in clients:
            client.thread.join(timeout=30)
    finally:
        server.shutdown(grace_s=0.2)
    return server, clients


def change_of_round_one(state_dir: Path, config: RunConfig) -> np.ndarray:
    state = StateStore(state_dir).load_checkpoint()
    assert state is not None and state[1] == 1
    fed = config.federation
    start = initial_weights(config.feature_dim, config.num_classes, config.model.hidden, fed.seed)
    return np.concatenate([(state[0][n].astype(np.float64) - start[n]).reshape(-1) for n in sorted(state[0])])


def test_central_mode_clips_each_update_on_receipt(tmp_path: Path) -> None:
    config = dp_config(**{"privacy.noise_multiplier": 0.0})
    run_in_process(config, tmp_path / "state")
    change = change_of_round_one(tmp_path / "state", config)
    # every client sent VALUE everywhere (norm ~ 5): the mean of the clipped updates is that direction at norm C
    assert np.linalg.norm(change) == pytest.approx(0.1, rel=1e-4)
    assert np.allclose(change, change[0], rtol=1e-4)


def test_central_mode_adds_noise_of_std_z_c_to_the_sum(tmp_path: Path) -> None:
    z = 2.0
    config = dp_config(**{"privacy.noise_multiplier": z})
    run_in_process(config, tmp_path / "state")
    change = change_of_round_one(tmp_path / "state", config)
    # the mean over m = 2 updates carries z*C/m per coordinate; the clipped signal (norm 0.1 over ~10^5 values) is negligible
    assert np.std(change) == pytest.approx(z * 0.1 / 2, rel=0.05)
    assert abs(np.mean(change)) < 0.02 * np.std(change)


def test_epsilon_spent_is_the_accountants_in_metrics_status_and_prometheus(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = dp_config(**{"federation.rounds": 3, "privacy.target_epsilon": 5.0, "privacy.epsilon_budget": 8.0})
    server, _ = run_in_process(config, tmp_path / "state")
    plan = json.loads((tmp_path / "state" / "privacy_plan.json").read_text())
    assert plan["q"] == 0.5 and plan["mode"] == "central"
    expected = [round(epsilon(r, 0.5, plan["noise_multiplier"], 1e-5), 4) for r in (1, 2, 3)]
    records = StateStore(tmp_path / "state").read_metrics()
    assert [r["dp_epsilon"] for r in records] == expected
    assert expected[0] < expected[1] < expected[2] == pytest.approx(5.0, rel=0.01)  # z calibrated for 3 rounds

    scraped = {s.name: s.value for family in registry_for(server.coordinator).collect() for s in family.samples}
    assert scraped["fedser_dp_epsilon"] == expected[-1] and scraped["fedser_dp_delta"] == 1e-5

    capsys.readouterr()  # the run's log lines
    assert run_cli(server_cli, "fedser-server", ["status", "--state-dir", str(tmp_path / "state"), "--json"]) == 0
    privacy = json.loads(capsys.readouterr().out)["privacy"]
    assert privacy["epsilon"] == expected[-1] and privacy["round"] == 3 and privacy["epsilon_budget"] == 8.0
    assert run_cli(server_cli, "fedser-server", ["status", "--state-dir", str(tmp_path / "state")]) == 0
    line = f"epsilon {expected[-1]:.4g} at delta 1e-05 after round 3 (budget 8)"
    assert line in capsys.readouterr().out
    assert run_cli(server_cli, "fedser-server", ["report", "--state-dir", str(tmp_path / "state"),
                                                 "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "report.html").read_text()
    assert "differential privacy" in page and line in page and "dp_epsilon" in page


def test_a_budget_ends_the_grpc_run_cleanly_before_the_round_that_would_exceed_it(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    z = 2.0
    budget = (epsilon(2, 0.5, z, 1e-5) + epsilon(3, 0.5, z, 1e-5)) / 2  # two rounds fit, the third would not
    config = dp_config(**{"federation.rounds": 6, "privacy.noise_multiplier": z, "privacy.epsilon_budget": budget})
    (tmp_path / "run.toml").write_text(to_toml(config))
    state_dir, port = tmp_path / "state", free_port()
    server = subprocess.Popen([sys.executable, "-m", "fedser_server.cli", "serve", "--insecure", "--address",
                               f"127.0.0.1:{port}", "--state-dir", str(state_dir), "--config", str(tmp_path / "run.toml"),
                               "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        raw.wait_for(lambda: (state_dir / "address").exists(), 60, "the server to listen")
        clients = [RawClient(port, f"raw{i}") for i in range(CLIENTS)]
        out, err = server.communicate(timeout=120)
    finally:
        server.kill()
    for client in clients:
        client.thread.join(timeout=30)

    assert server.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    stopped = [line for line in out.splitlines() if line.startswith("run stopped:")]
    assert len(stopped) == 1, out
    assert stopped[0].startswith("run stopped: privacy budget reached: round 3 would spend epsilon")
    assert all(c.ending == "shutdown" for c in clients), [c.ending for c in clients]  # told to leave, not cut off
    assert max(r for c in clients for r in c.trained) == 2
    store = StateStore(state_dir)
    checkpoint = store.load_checkpoint()
    assert checkpoint is not None and checkpoint[1] == 2  # whole, and of the last round released
    assert [r["round"] for r in store.read_metrics()] == [1, 2]
    assert store.read_metrics()[-1]["dp_epsilon"] <= budget

    capsys.readouterr()
    assert run_cli(server_cli, "fedser-server", ["status", "--state-dir", str(state_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stopped"] == stopped[0].removeprefix("run stopped: ")


def test_a_resumed_run_goes_on_spending_from_the_rounds_it_released(tmp_path: Path) -> None:
    z, state_dir = 1.5, tmp_path / "state"
    config = dp_config(**{"federation.rounds": 2, "privacy.noise_multiplier": z})
    _, clients = run_in_process(config, state_dir)
    first = StateStore(state_dir).read_metrics()
    assert [r["dp_epsilon"] for r in first] == [round(epsilon(r, 0.5, z, 1e-5), 4) for r in (1, 2)]
    more = config.model_copy(update={"federation": config.federation.model_copy(update={"rounds": 4})})
    run_in_process(more, state_dir, [c.client_id for c in clients], resume=True)
    records = StateStore(state_dir).read_metrics()
    assert [r["round"] for r in records] == [1, 2, 3, 4] and records[:2] == first
    # each round is accounted at its own sampling rate (the clients alive when it was sampled)
    expected = [round(epsilon_of_rounds(Counter(r["dp_q"] for r in records[:n]), z, 1e-5), 4) for n in (1, 2, 3, 4)]
    assert [r["dp_epsilon"] for r in records] == expected
    # round 3 spends on from round 2, not from zero again
    assert records[1]["dp_epsilon"] < records[2]["dp_epsilon"]
    assert records[2]["dp_epsilon"] > round(epsilon_of_rounds(Counter([records[2]["dp_q"]]), z, 1e-5), 4)
