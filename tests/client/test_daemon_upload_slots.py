"""An upload that finds every upload slot taken is refused at once with a time to come back
(`upload_slots_busy`, `fedser-retry-after-ms`), never parked; the daemon keeps its update and
sends it again then, within the round. It sends its data only once the server granted it a slot,
so a refused try puts its header alone on the wire. Real gRPC, a server in this process whose run's clock
the test moves by hand."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedser_client.core.trainer import TrainReport
from fedser_client.local_store import LocalStore
from fedser_client.transport.daemon import ClientDaemon, ClientIdentity, DaemonResult
from fedser_server.app import RunningServer
from fedser_server.observability.metrics import start_metrics_endpoint
from fedser_server.transport.admission import Limits
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.train_metrics import TrainMetrics
from tests.faults import raw
from tests.faults.proxy import UP, FaultyProxy, Schedule
from tests.manual_clock import ManualClock
from tests.observability.test_metrics import scrape

pytestmark = pytest.mark.timeout(180)

ROUND_TIMEOUT_S = 60.0  # on the test's clock, which moves only when the test moves it


class GatedTrainer:
    """Trivial local work that starts only once `go` is set (so uploads are sent while the slot is held)."""

    def __init__(self, go: threading.Event) -> None:
        self.go = go
        self.models: list[dict[str, np.ndarray]] = []

    def train(self, global_state, task, local_state):
        assert self.go.wait(timeout=120)
        self.models.append({k: v.copy() for k, v in global_state.items()})
        update = {"delta." + k[2:]: np.full_like(v, 0.001) for k, v in global_state.items()}
        report = TrainReport(TrainMetrics(n_samples=10, loss=0.0, n_labeled=10, local_steps=1))
        return update, local_state, report


class Daemons:
    def __init__(self, port: int, tmp: Path, n: int, go: threading.Event) -> None:
        self.trainers = [GatedTrainer(go) for _ in range(n)]
        self.results: dict[int, DaemonResult] = {}
        self.errors: list[BaseException] = []
        self.daemons = [
            ClientDaemon(f"127.0.0.1:{port}",
                         ClientIdentity(name=f"d{i}", feature_name="emobase", feature_dim=988, label_counts=raw.LABELS,
                                        n_unlabeled=0, n_eval=0),
                         lambda _config, trainer=trainer: trainer, LocalStore(tmp / f"d{i}"), [], connect_timeout_s=60)
            for i, trainer in enumerate(self.trainers)]
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]
        for thread in self.threads:
            thread.start()

    def _run(self, i: int) -> None:
        try:
            self.results[i] = self.daemons[i].run()
        except BaseException as exc:  # noqa: BLE001 - the test asserts that no daemon failed
            self.errors.append(exc)

    def stop(self) -> None:
        for daemon in self.daemons:
            daemon.stop()
        for thread in self.threads:
            thread.join(timeout=30)


class Staller:
    """A raw client whose upload takes the one slot (header and first chunk), then holds it until released."""

    def __init__(self, port: int) -> None:
        self.channel, self.stub = raw.stub_for(port)
        self.session = raw.join(self.stub, "staller").session
        self.release = threading.Event()
        self.outcome: list[object] = []

    def leave(self) -> None:
        self.stub.Leave(pb.LeaveRequest(protocol_version=raw.V, session=self.session, reason="done"), timeout=10)

    def answer(self, task: pb.Task) -> None:
        """A whole update for `task`, sent again while the slot is busy (as the daemon does)."""
        messages = raw.answer_messages(self.stub, self.session, task)
        while (code := raw.code_of(lambda: raw.submit(self.stub, messages))[0]) == grpc.StatusCode.RESOURCE_EXHAUSTED:
            time.sleep(0.2)
        assert code == grpc.StatusCode.OK, code

    def hold_the_slot(self) -> None:
        task = raw.wait_task(self.stub, self.session)
        messages = raw.answer_messages(self.stub, self.session, task)

        def stream() -> Iterator[pb.UpdateChunk]:
            yield messages[0]
            yield messages[1]
            self.release.wait(timeout=120)
            yield from messages[2:]

        thread = threading.Thread(target=lambda: self.outcome.append(raw.code_of(lambda: raw.submit(self.stub, stream()))),
                                  daemon=True)
        thread.start()


def _server(tmp_path: Path, clock: ManualClock, **overrides: object):
    config = raw.small_config(**{"federation.inline_model_max_bytes": 0,  # updates stream, and need a slot
                                 "federation.round_timeout_s": ROUND_TIMEOUT_S, **overrides})
    from fedser_server import app as server_app
    return server_app.start(config.model_copy(update={"admission": Limits(uploads=1)}), "127.0.0.1:0", tmp_path / "state",
                            clock=clock)


def _finish_run(server: RunningServer, staller: Staller, daemons: Daemons, what: str) -> None:
    """The slot is free again: the run completes, every client hears SHUTDOWN, the daemons stop."""
    assert server.wait(timeout=120), f"the {what} did not finish"
    staller.leave()
    server.coordinator.wait_for_shutdown_delivery(30)
    daemons.stop()


def _tear_down(server: RunningServer, staller: Staller, daemons: Daemons) -> None:
    staller.release.set()
    daemons.stop()
    staller.channel.close()
    server.shutdown(grace_s=0.2)


def test_three_uploads_at_once_through_one_slot_all_land_in_the_round(tmp_path: Path) -> None:
    clock = ManualClock()
    server = _server(tmp_path, clock, **{"federation.min_clients": 4})
    endpoint = start_metrics_endpoint(server.coordinator, 0, "127.0.0.1")
    go = threading.Event()
    staller = Staller(server.port)
    daemons = Daemons(server.port, tmp_path, 3, go)
    try:
        staller.hold_the_slot()
        raw.wait_for(lambda: server.coordinator.bytes_received > 0, what="the staller's upload holding the slot")
        go.set()  # the three daemons train and send their updates now, while the one slot is taken
        raw.wait_for(lambda: server.coordinator.refusals["upload_slots_busy"] >= 3, within_s=60,
                     what="the three uploads refused as busy")
        staller.release.set()
        _finish_run(server, staller, daemons, "round")
        values = scrape(endpoint.port)
    finally:
        endpoint.stop()
        _tear_down(server, staller, daemons)
    assert daemons.errors == []
    assert [daemons.results[i].rounds_trained for i in range(3)] == [[1], [1], [1]]
    assert [len(trainer.models) for trainer in daemons.trainers] == [1, 1, 1]  # each kept its update across its tries
    assert staller.outcome[0][0].name == "OK"
    record = json.loads((tmp_path / "state" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["round"] == 1 and record["n_updates"] == 4
    busy = values[("fedser_updates_refused_total", (("reason", "upload_slots_busy"),))]
    assert busy >= 3 and busy == server.coordinator.refusals["upload_slots_busy"]


def test_a_client_whose_retries_outlast_the_round_hears_stale_round_and_the_run_goes_on(tmp_path: Path) -> None:
    clock = ManualClock()
    server = _server(tmp_path, clock, **{"federation.rounds": 2, "federation.min_clients": 2, "federation.min_updates": 1})
    go = threading.Event()
    staller = Staller(server.port)
    daemons = Daemons(server.port, tmp_path, 1, go)
    try:
        staller.hold_the_slot()
        raw.wait_for(lambda: server.coordinator.bytes_received > 0, what="the staller's upload holding the slot")
        go.set()
        raw.wait_for(lambda: server.coordinator.refusals["upload_slots_busy"] >= 2, within_s=60,
                     what="the daemon's upload refused as busy and sent again")
        clock.advance(ROUND_TIMEOUT_S + 1)  # the round closes with no update, and is tried again
        raw.wait_for(lambda: server.coordinator.refusals["stale_round"] >= 1, within_s=60,
                     what="the daemon's next try refused as stale")
        staller.release.set()  # its stream of the closed round is cut at its next chunk; the slot is free
        for _ in range(2):  # the staller answers the retried round 1 and round 2 like any client
            staller.answer(raw.wait_task(staller.stub, staller.session, within_s=60))
        _finish_run(server, staller, daemons, "run")
    finally:
        _tear_down(server, staller, daemons)
    assert daemons.errors == []
    assert daemons.results[0].rounds_trained == [1, 2] and daemons.results[0].shutdown
    assert server.coordinator.completed_round == 2
    lines = [json.loads(line) for line in (tmp_path / "state" / "metrics.jsonl").read_text().splitlines()]
    assert [line["n_updates"] for line in lines if "n_updates" in line] == [2, 2]


def test_a_refused_upload_sends_only_its_header_and_the_update_lands_after_its_retry_after(tmp_path: Path) -> None:
    clock = ManualClock()
    server = _server(tmp_path, clock, **{"federation.min_clients": 2})
    go = threading.Event()
    staller = Staller(server.port)
    with FaultyProxy(server.port, Schedule()) as proxy:  # the daemon's bytes to the server, counted on the way
        daemons = Daemons(proxy.port, tmp_path, 1, go)
        try:
            staller.hold_the_slot()
            raw.wait_for(lambda: server.coordinator.bytes_received > 0, what="the staller's upload holding the slot")
            sent_before = proxy.carried[UP]
            go.set()
            raw.wait_for(lambda: server.coordinator.refusals["upload_slots_busy"] >= 2, within_s=60,
                         what="the daemon's upload refused, and refused again after its retry-after")
            sent_while_refused = proxy.carried[UP] - sent_before
            staller.release.set()
            _finish_run(server, staller, daemons, "round")
        finally:
            _tear_down(server, staller, daemons)
    update_bytes = sum(v.nbytes for v in server.coordinator.state.values())
    assert update_bytes > 1_000_000
    # two or three tries, each its call's headers and the update's header message: no data chunk
    # (a client that streams at once pushes a stream window, 64 KiB or more, into each refused call)
    assert sent_while_refused < 16 * 1024, sent_while_refused
    assert daemons.errors == []
    assert daemons.results[0].rounds_trained == [1]
    record = json.loads((tmp_path / "state" / "metrics.jsonl").read_text().splitlines()[0])
    assert record["round"] == 1 and record["n_updates"] == 2
