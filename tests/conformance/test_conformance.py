"""Issue 14 §4: a client that knows only the .proto and docs/protocol.md completes a run."""

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


def test_a_client_from_the_proto_alone_completes_a_run(tmp_path: Path) -> None:
    server = raw.start(tmp_path, **{"federation.eval_every": 1})
    try:
        initial = {n: v.copy() for n, v in server.coordinator.state.items()}
        out = tmp_path / "generated"
        out.mkdir()
        # its own process and working dir: its generated messages do not meet ours
        done = subprocess.run([sys.executable, str(ROOT / "tests" / "conformance" / "proto_client.py"), str(ROOT / "proto"),
                               str(out), f"127.0.0.1:{server.port}"], cwd=tmp_path, capture_output=True, text=True, timeout=150)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert server.wait(timeout=30) and server.failure is None
    finally:
        server.shutdown(grace_s=0.2)
    assert result["kinds"][-1] == "TASK_KIND_SHUTDOWN"
    assert "TASK_KIND_TRAIN" in result["kinds"] and "TASK_KIND_EVALUATE" in result["kinds"]
    assert result["inline"] is True  # the default model inline fits the default 4 MiB receive limit
    assert result["reflection_v1_lists_coordinator"]
    assert result["fedser_modules_imported"] == []
    np.testing.assert_allclose(server.coordinator.state["w.head.bias"], initial["w.head.bias"] + 0.01, rtol=1e-6)
    assert server.coordinator.history[0]["uar"] is not None
