"""Clients that know only the .proto and docs/protocol.md take part in a secure round: the server
ends with the weighted mean of their updates, which it never saw one by one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.faults import raw

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]


def test_clients_written_from_the_protocol_page_complete_a_secure_round(tmp_path: Path) -> None:
    n = 3
    server = raw.start(tmp_path, **{"federation.min_clients": n, "privacy.secure_aggregation": "secagg+"})
    try:
        initial = {name: v.copy() for name, v in server.coordinator.state.items()}
        out = tmp_path / "generated"
        out.mkdir()
        done = subprocess.run([sys.executable, str(ROOT / "tests" / "conformance" / "secagg_client.py"), str(ROOT / "proto"),
                               str(out), f"127.0.0.1:{server.port}", str(n)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=150)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert server.wait(timeout=30) and server.failure is None
    finally:
        server.shutdown(grace_s=0.2)
    assert result["fedser_modules_imported"] == [] and result["refused"] == []
    assert all(kinds[-1] == "TASK_KIND_SHUTDOWN" and "TASK_KIND_TRAIN" in kinds for kinds in result["kinds"].values())
    # client k sent 0.001 (k + 1) everywhere (within the clip norm) with weight 10 (k + 1): the mean is 0.001 * 14 / 6
    expected_step = 0.001 * sum((k + 1) ** 2 for k in range(n)) / sum(k + 1 for k in range(n))
    np.testing.assert_allclose(server.coordinator.state["w.head.bias"], initial["w.head.bias"] + expected_step, atol=1e-5)
    assert server.coordinator.history[0]["n_updates"] == n
