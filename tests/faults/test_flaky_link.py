"""A federation over a flaky link: every client reaches the server through a userspace TCP proxy
that adds latency, resets connections in the middle of uploads, closes one with a FIN in the
middle of a model download, and stalls one. Clients find their way through by themselves, and the
run ends with every client in every round, on the same model as a run over a clean link."""

from __future__ import annotations

import pytest

from tests.conftest import free_port
from tests.faults import federation
from tests.faults.proxy import DOWN, UP, Fault, FaultyProxy, Schedule

pytestmark = pytest.mark.timeout(300)

KB = 1024
# Connections in the order they reach the server (clients in one process may share one): the first
# three are reset a third of the way into an update (~1.1 MB), the fourth closed with a FIN a third of
# the way into a model download, the fifth stalled for 3 s mid-upload; later ones are left alone.
SCHEDULE = Schedule(latency_s=0.02, faults={
    1: Fault("reset", UP, 400 * KB), 2: Fault("reset", UP, 400 * KB), 3: Fault("reset", UP, 400 * KB),
    4: Fault("fin", DOWN, 400 * KB), 5: Fault("stall", UP, 200 * KB, stall_s=3.0),
})


def test_clients_finish_the_run_through_a_proxy_that_delays_cuts_and_stalls(
        tmp_path, fault_clients, reference_model, spawn) -> None:
    config = federation.config()
    port, state_dir = free_port(), tmp_path / "state"
    log = tmp_path / "server.log"
    server = spawn(federation.serve_command(port, state_dir, federation.write_config(tmp_path, config)), log)
    with FaultyProxy(port, SCHEDULE) as proxy:
        clients = federation.Clients(f"127.0.0.1:{proxy.port}", fault_clients, config)
        try:
            clients.start()
            assert server.wait(timeout=240) == 0, federation.log_tail(log)
            clients.join()
        finally:
            clients.stop()
        counts = dict(proxy.counts)
    assert counts["reset"] == 3 and counts["fin"] == 1 and counts["stall"] == 1, counts
    assert counts["connections"] >= 5 and counts["delayed_chunks"] > 0, counts
    metrics = federation.metrics_of(state_dir)
    assert [m["round"] for m in metrics] == [1, 2, 3, 4]
    assert all(m["n_updates"] == 3 for m in metrics), metrics
    assert clients.all_shut_down(), clients.errors
    federation.assert_same_model(federation.final_model(state_dir), reference_model)
