"""The gRPC server does not apply differential privacy yet: a run configured with it is refused, never run
without the noise it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedser_server.app import build_loop
from fedser_shared.config import load_run_config
from fedser_shared.errors import ConfigError


@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_a_dp_run_is_refused_by_the_grpc_server(tmp_path: Path, mode: str) -> None:
    config = load_run_config(None, {"privacy.dp": mode, "privacy.target_epsilon": 8.0})
    with pytest.raises(ConfigError, match=f"privacy.dp = '{mode}' is applied by the in-process engine only"):
        build_loop(config, tmp_path / "state")
    assert not (tmp_path / "state" / "metrics.jsonl").exists()
