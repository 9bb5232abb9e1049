"""What the gRPC server refuses to run under differential privacy, in one line before any round: SCAFFOLD
(a second, unclipped release per round) and adaptive clipping (the server cannot see the clients' norms)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedser_server.app import build_loop
from fedser_shared.config import load_run_config
from fedser_shared.errors import ConfigError


def test_scaffold_with_dp_is_refused_by_the_server_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[federation]\nalgorithm = "scaffold"\n\n[privacy]\ndp = "central"\nnoise_multiplier = 1.0\n')
    result = subprocess.run([sys.executable, "-m", "fedser_server.cli", "serve", "--state-dir", str(tmp_path / "s"),
                             "--config", str(config), "--insecure", "--address", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "privacy.dp needs federation.algorithm = 'fedavg'" in errors[0], result.stderr
    assert not (tmp_path / "s" / "metrics.jsonl").exists()


@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_adaptive_clipping_is_refused_by_the_grpc_server(tmp_path: Path, mode: str) -> None:
    config = load_run_config(None, {"privacy.dp": mode, "privacy.target_epsilon": 8.0,
                                    "privacy.adaptive_clip_quantile": 0.5})
    with pytest.raises(ConfigError, match="privacy.adaptive_clip_quantile is applied by the in-process engine only"):
        build_loop(config, tmp_path / "state")
    assert not (tmp_path / "state" / "metrics.jsonl").exists()
