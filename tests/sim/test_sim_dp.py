"""`fedser-sim --dp-epsilon`: epsilon per round from the accountant and a budget that stops the run, with the
in-process engine and over gRPC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.observability.conftest import make_corpus


def _sim(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fedser_sim.cli", "--out", str(tmp_path / "run"), "--workers", "1",
                           "--feature-cache", str(tmp_path / "cache"), *args],
                          capture_output=True, text=True, timeout=280, env=env)


@pytest.mark.timeout(300)
def test_dp_epsilon_is_spent_over_the_planned_rounds_and_printed(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", speakers=4, per_class=2)
    proc = _sim(tmp_path, "--corpus", str(corpus), "--engine", "inprocess", "--clients", "4", "--rounds", "4",
                "--eval-every", "2", "--dp-epsilon", "5")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ε spent" in proc.stdout and "differential privacy: epsilon 5 at delta 1e-05 after 4 rounds" in proc.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "server" / "metrics.jsonl").read_text().splitlines()]
    spent = [r["dp_epsilon"] for r in records]
    assert len(spent) == 4 and spent == sorted(spent) and spent[0] < spent[-1]
    assert spent[-1] == pytest.approx(5.0, rel=0.01)


@pytest.mark.timeout(300)
def test_a_budget_stops_the_run_before_the_round_that_would_exceed_it(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", speakers=4, per_class=2)
    config = tmp_path / "run.toml"
    config.write_text('[privacy]\ndp = "central"\nnoise_multiplier = 2.0\nepsilon_budget = 3.0\n')
    proc = _sim(tmp_path, "--corpus", str(corpus), "--engine", "inprocess", "--clients", "4", "--rounds", "50",
                "--config", str(config))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run stopped: privacy budget reached: round" in proc.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "server" / "metrics.jsonl").read_text().splitlines()]
    # z = 2 at q = 2/4: round 4 spends 2.9, round 5 would spend 3.1
    assert len(records) == 4 and records[-1]["dp_epsilon"] <= 3.0
    reason = (tmp_path / "run" / "server" / "stopped").read_text().strip()  # what `fedser-server status` shows
    assert f"run stopped: {reason}" in proc.stdout


@pytest.mark.timeout(300)
def test_the_grpc_engine_applies_dp_and_stops_cleanly_at_the_budget(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", speakers=2, per_class=1)
    config = tmp_path / "run.toml"
    config.write_text("[privacy]\nepsilon_budget = 3.0\n")
    # z is calibrated to spend 4 over 3 rounds: the budget of 3 ends the run before its last round
    proc = _sim(tmp_path, "--corpus", str(corpus), "--engine", "grpc", "--clients", "2", "--rounds", "3",
                "--dp-epsilon", "4", "--config", str(config))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run stopped: privacy budget reached: round" in proc.stdout and "ε spent" in proc.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "server" / "metrics.jsonl").read_text().splitlines()]
    spent = [r["dp_epsilon"] for r in records]
    assert 1 <= len(spent) < 3 and spent == sorted(spent) and spent[-1] <= 3.0
    reason = (tmp_path / "run" / "server" / "stopped").read_text().strip()
    assert reason.startswith("privacy budget reached: round") and f"run stopped: {reason}" in proc.stdout
