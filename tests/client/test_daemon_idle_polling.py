"""Against a server in idle polling, the daemon waits out each come-back time with its connection
closed, reconnects for the next poll, and trains when it is sampled; a short wait keeps the connection."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fedser_client.local_store import LocalStore
from fedser_client.transport.daemon import ClientDaemon, ClientIdentity, DaemonResult
from tests.client.test_daemon_inline_model import ZeroUpdateTrainer
from tests.faults import raw

pytestmark = pytest.mark.timeout(120)

IDLE_S = 0.4  # come-back times of 0.3-0.5 s (real time: the daemon sleeps them)


def _daemon(server, tmp_path: Path, name: str, disconnect_after_s: float) -> ClientDaemon:
    identity = ClientIdentity(name=name, feature_name="emobase", feature_dim=988, label_counts=raw.LABELS, n_unlabeled=0, n_eval=0)
    return ClientDaemon(f"127.0.0.1:{server.port}", identity, lambda _config: ZeroUpdateTrainer(), LocalStore(tmp_path / name),
                        [], connect_timeout_s=30, disconnect_after_s=disconnect_after_s)


def test_the_daemon_disconnects_while_away_reconnects_to_poll_and_trains_when_sampled(tmp_path: Path) -> None:
    server = raw.start(tmp_path, **{"federation.idle_poll_s": IDLE_S, "federation.min_clients": 2, "federation.rounds": 2,
                                    "federation.poll_timeout_s": 5.0})
    away = _daemon(server, tmp_path, "away", disconnect_after_s=0.2)
    stays = _daemon(server, tmp_path, "stays", disconnect_after_s=5.0)  # the default: a wait under 5 s keeps the connection
    results: dict[str, DaemonResult] = {}
    threads = {d.identity.name: threading.Thread(target=lambda d=d: results.__setitem__(d.identity.name, d.run()), daemon=True)
               for d in (away, stays)}
    try:
        threads["away"].start()
        # alone, it cannot be sampled (the round needs two): it comes and goes
        raw.wait_for(lambda: away.connections >= 3, within_s=60, what="the daemon to reconnect twice")
        threads["stays"].start()
        assert server.wait(timeout=90), "the rounds did not finish"
        for thread in threads.values():
            thread.join(timeout=30)
    finally:
        away.stop()
        stays.stop()
        server.shutdown(grace_s=0.2)
    assert server.coordinator.completed_round == 2
    assert results["away"].rounds_trained == [1, 2] and results["away"].shutdown
    assert results["stays"].rounds_trained == [1, 2] and results["stays"].shutdown
    assert away.connections >= 3 and stays.connections == 1
