"""A client whose server is gone for good (finished, crashed and never resumed) stops retrying after
`--connect-timeout` seconds without an answer, with an error naming the server, instead of
retrying `server_unreachable` forever. Time is the daemon's injected clock: no real wait."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from fedser_client.local_store import LocalStore
from fedser_client.transport.daemon import ClientDaemon, ClientIdentity
from fedser_shared.errors import FedserError
from tests.client.test_daemon_inline_model import ZeroUpdateTrainer
from tests.faults import raw

pytestmark = pytest.mark.timeout(120)


def test_a_daemon_gives_up_on_a_server_that_stopped_answering(tmp_path: Path) -> None:
    server = raw.start(tmp_path, **{"federation.min_clients": 2})  # waits for a second client: no round starts
    identity = ClientIdentity(name="c0", feature_name="emobase", feature_dim=988, label_counts=raw.LABELS, n_unlabeled=0, n_eval=0)
    gone = threading.Event()
    jumps = itertools.count()
    # once the server is gone, every look at the clock is 1000 s later: the second unanswered retry crosses the bound
    clock = lambda: time.monotonic() + (1000.0 * next(jumps) if gone.is_set() else 0.0)  # noqa: E731
    daemon = ClientDaemon(f"127.0.0.1:{server.port}", identity, lambda _config: ZeroUpdateTrainer(), LocalStore(tmp_path / "c0"),
                          [], connect_timeout_s=600, clock=clock)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = daemon.run()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        raw.wait_for(lambda: daemon.session is not None, 30, "the client to join")
        server.shutdown(grace_s=0.2)
        gone.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the daemon is still retrying a server that is gone"
    finally:
        daemon.stop()
    error = outcome.get("error")
    assert isinstance(error, FedserError) and str(error).startswith("gave up on the server"), outcome
    assert f"127.0.0.1:{server.port}" in str(error) and "--connect-timeout 600" in str(error)
