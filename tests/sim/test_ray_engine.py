"""`fedser-sim --engine ray`: client daemons as Ray actors over real gRPC (skipped without Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedser_shared.cli import run_cli
from tests.observability.conftest import make_corpus

ray = pytest.importorskip("ray")


@pytest.mark.timeout(300)
def test_a_ray_federation_runs_every_round_and_reports_uar(tmp_path: Path) -> None:
    from fedser_sim.cli import app

    corpus = make_corpus(tmp_path / "corpus", speakers=2, per_class=3)
    config = tmp_path / "run.toml"
    config.write_text("[federation]\nfraction = 1.0\npoll_timeout_s = 2.0\n")
    code = run_cli(app, "fedser-sim", [
        "--corpus", str(corpus), "--out", str(tmp_path / "run"), "--clients", "2", "--rounds", "2", "--eval-every", "1",
        "--engine", "ray", "--config", str(config), "--workers", "1", "--feature-cache", str(tmp_path / "cache"),
        "--timeout", "240"])
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["engine"] == "ray"
    assert [m["round"] for m in summary["rounds"]] == [1, 2]
    assert all(m["n_updates"] == 2 for m in summary["rounds"])
    assert all(0.0 <= m["uar"] <= 1.0 for m in summary["rounds"])
    assert not ray.is_initialized()
