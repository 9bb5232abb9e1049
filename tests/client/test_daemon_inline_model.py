"""The daemon trains on the model that came inline with its task only after checking it: a
tampered inline model is refused, and the daemon asks again and gets an intact one."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from fedser_client.core.trainer import TrainReport
from fedser_client.local_store import LocalStore
from fedser_client.transport.daemon import ClientDaemon, ClientIdentity
from fedser_server.transport import servicer as servicer_module
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.train_metrics import TrainMetrics
from fedser_shared.weights import initial_weights
from tests.faults import raw

pytestmark = pytest.mark.timeout(120)


class ZeroUpdateTrainer:
    def __init__(self) -> None:
        self.models: list[dict[str, np.ndarray]] = []

    def train(self, global_state, task, local_state):
        self.models.append({k: v.copy() for k, v in global_state.items()})
        update = {"delta." + k[2:]: np.zeros_like(v) for k, v in global_state.items()}
        report = TrainReport(TrainMetrics(n_samples=10, loss=0.0, n_labeled=10, local_steps=1))
        return update, local_state, report


def _run_one_daemon(server, tmp_path: Path) -> ZeroUpdateTrainer:
    """One client daemon through the server's run (one round); returns its trainer."""
    trainer = ZeroUpdateTrainer()
    identity = ClientIdentity(name="c0", feature_name="emobase", feature_dim=988, label_counts=raw.LABELS, n_unlabeled=0, n_eval=0)
    daemon = ClientDaemon(f"127.0.0.1:{server.port}", identity, lambda _config: trainer, LocalStore(tmp_path / "c0"), [],
                          connect_timeout_s=30)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert server.wait(timeout=60), "the round did not finish"
    finally:
        daemon.stop()
        thread.join(timeout=30)
        server.shutdown(grace_s=0.2)
    return trainer


def test_a_tampered_inline_model_is_refused_and_fetched_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    intact_of = servicer_module._InlineModel.of
    tampered: list[int] = []

    def of(self, blob):  # the first task's model has one byte flipped on the way
        message = intact_of(self, blob)
        if tampered:
            return message
        data = bytearray(message.data)
        data[-1] ^= 0xFF
        tampered.append(1)
        return servicer_module.pb.InlineBlob(header=message.header, data=bytes(data))

    monkeypatch.setattr(servicer_module._InlineModel, "of", of)
    server = raw.start(tmp_path)
    trainer = _run_one_daemon(server, tmp_path)
    assert tampered and len(trainer.models) == 1
    initial = server.coordinator.state  # a zero update leaves the global model as it was
    for name, value in trainer.models[0].items():
        np.testing.assert_array_equal(value, initial[name])


def _record_fetches(monkeypatch: pytest.MonkeyPatch) -> list[pb.FetchModelRequest]:
    """The FetchModel requests the servicer serves from now on, in order."""
    fetched: list[pb.FetchModelRequest] = []
    serve_fetch = servicer_module.CoordinatorServicer.FetchModel

    def fetch_model(self, request, context):
        fetched.append(request)
        yield from serve_fetch(self, request, context)

    monkeypatch.setattr(servicer_module.CoordinatorServicer, "FetchModel", fetch_model)
    return fetched


def test_a_task_without_an_inline_model_is_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched = _record_fetches(monkeypatch)
    server = raw.start(tmp_path, **{"federation.inline_model_max_bytes": 0})
    trainer = _run_one_daemon(server, tmp_path)
    assert len(fetched) == 1 and len(trainer.models) == 1


def test_a_server_with_a_full_disk_makes_the_daemon_wait_its_longest_backoff(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from fedser_client.transport import daemon as daemon_module
    from fedser_server.state.spill import SpillFile

    full_for = [2]  # the first two uploads find the disk full
    write_all = SpillFile._write_all

    def park(self, data):
        if full_for[0] > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_all(self, data)

    def refused_once(self, data):  # one refusal per upload, not per chunk
        try:
            park(self, data)
        except OSError:
            full_for[0] -= 1
            raise

    long_waits: list[int] = []
    monkeypatch.setattr(SpillFile, "_write_all", refused_once)
    monkeypatch.setattr(daemon_module.Backoff, "sleep_longest", lambda self, stop: long_waits.append(1))
    server = raw.start(tmp_path, **{"federation.inline_model_max_bytes": 0})
    trainer = _run_one_daemon(server, tmp_path)
    assert server.coordinator.refusals["disk_full"] == 2 and len(long_waits) == 2
    assert len(trainer.models) == 3 and server.coordinator.completed_round == 1


def test_past_the_rounds_inline_budget_tasks_come_without_the_model_and_their_clients_fetch_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fetched = _record_fetches(monkeypatch)
    config = raw.small_config()
    model_bytes = sum(v.nbytes for v in initial_weights(config.feature_dim, config.num_classes, config.model.hidden, 0).values())
    server = raw.start(tmp_path, **{"federation.min_clients": 3,
                                    "federation.inline_models_per_round_max_bytes": model_bytes * 3 // 2})  # one model
    trainers = [ZeroUpdateTrainer() for _ in range(3)]
    daemons = [ClientDaemon(f"127.0.0.1:{server.port}",
                            ClientIdentity(name=f"c{i}", feature_name="emobase", feature_dim=988, label_counts=raw.LABELS,
                                           n_unlabeled=0, n_eval=0),
                            lambda _config, trainer=trainer: trainer, LocalStore(tmp_path / f"c{i}"), [], connect_timeout_s=30)
               for i, trainer in enumerate(trainers)]
    threads = [threading.Thread(target=daemon.run, daemon=True) for daemon in daemons]
    for thread in threads:
        thread.start()
    try:
        assert server.wait(timeout=60), "the round did not finish"
    finally:
        for daemon in daemons:
            daemon.stop()
        for thread in threads:
            thread.join(timeout=30)
        server.shutdown(grace_s=0.2)
    assert len(fetched) == 2  # one of the three sampled clients had the model in its task
    initial = server.coordinator.state  # zero updates leave the global model as it was
    assert all(len(trainer.models) == 1 for trainer in trainers)
    for trainer in trainers:
        assert trainer.models[0].keys() == initial.keys()
        for name, value in trainer.models[0].items():
            np.testing.assert_array_equal(value, initial[name])
