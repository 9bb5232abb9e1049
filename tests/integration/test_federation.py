"""A real federation on loopback: in-process server, three client daemons over real gRPC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedser_shared.config import load_run_config
from tests.integration.federation import run_thread_federation


def run_federation(tmp_path: Path, client_dirs: list[Path], rounds: int = 3, **overrides: object):
    config = load_run_config(None, {
        "federation.rounds": rounds, "federation.min_clients": 3, "federation.fraction": 1.0,
        "federation.eval_every": 1, "federation.poll_timeout_s": 2.0, "federation.round_timeout_s": 60.0,
        **overrides})
    dirs = {f"client{i}": data_dir for i, data_dir in enumerate(client_dirs)}
    records: dict[str, list] = {name: [] for name in dirs}

    def observer_for(name: str):
        return lambda round_index, global_state, update, report: records[name].append((round_index, global_state, update, report))

    server, results = run_thread_federation(config, dirs, tmp_path / "state", observer_for=observer_for)
    return server, records, results


@pytest.mark.timeout(300)
def test_three_clients_three_rounds_aggregate_the_weighted_mean(tmp_path: Path, client_dirs: list[Path]) -> None:
    server, records, results = run_federation(tmp_path, client_dirs, rounds=3)

    metrics = [json.loads(line) for line in (tmp_path / "state" / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3]
    assert all(m["n_sampled"] == 3 and m["n_updates"] == 3 for m in metrics)
    assert all(0.0 <= m["uar"] <= 1.0 for m in metrics)
    assert all(r.shutdown for r in results.values()) and len(results) == 3

    # What each client trained on in round r is the global state after round r-1; the next
    # round's global must be the sample-weighted mean of the clients' local results.
    by_round: dict[int, list] = {}
    for entries in records.values():
        for round_index, global_state, update, report in entries:
            by_round.setdefault(round_index, []).append((global_state, update, report.metrics.n_samples))
    final = server.coordinator.state
    for round_index in (1, 2, 3):
        contributions = by_round[round_index]
        assert len(contributions) == 3
        theta = contributions[0][0]
        next_global = by_round[round_index + 1][0][0] if round_index < 3 else final
        total = sum(n for _, _, n in contributions)
        for name in theta:
            param = name[len("w."):]
            local_results = [g[name] + u["delta." + param] for g, u, _ in contributions]
            expected = sum(n * y.astype(np.float64) for y, (_, _, n) in zip(local_results, contributions)) / total
            np.testing.assert_allclose(next_global[name], expected, rtol=1e-5, atol=1e-6)
        assert any(np.abs(u["delta.head.weight"]).max() > 0 for _, u, _ in contributions)
