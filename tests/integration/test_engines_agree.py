"""Same seed, same clients: the in-process engine and the real gRPC path reach the same global
weights and control variate, and log the same pseudo-label counts (SCAFFOLD + Semi-FedSER)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fedser_client.core.data import UNLABELED
from fedser_client.local_store import LocalStore
from fedser_client.prepare import PreparedData, prepare_client_data
from fedser_shared.config import load_run_config
from fedser_sim.inprocess_engine import run_inprocess
from tests.conftest import EMOTIONS, make_client_dir
from tests.integration.federation import run_thread_federation


def with_hidden_truth(prepared: PreparedData) -> PreparedData:
    """The benchmark's trick: unlabeled rows keep their true class (here, from the file name)."""
    truth = np.array([EMOTIONS.index(Path(p).name.split("_")[0]) for p in prepared.train_paths], np.int64)
    hidden = np.where(prepared.data.y_train == UNLABELED, truth, UNLABELED)
    return dataclasses.replace(prepared, data=dataclasses.replace(prepared.data, hidden_labels=hidden))


@pytest.mark.timeout(300)
def test_inprocess_and_grpc_engines_reach_the_same_global_state(tmp_path: Path) -> None:
    config = load_run_config(None, {
        "federation.algorithm": "scaffold", "federation.rounds": 4, "federation.fraction": 0.5,
        "federation.min_clients": 2, "federation.start_clients": 3, "federation.eval_every": 2,
        "federation.poll_timeout_s": 2.0, "federation.round_timeout_s": 60.0, "federation.seed": 11,
        "train.lr": 0.1, "semi.enabled": True,
        # a barely trained model is rarely this sure; loosened so that pseudo-labels flow in 4 rounds
        "semi.tau_start": 0.3, "semi.tau_end": 0.35, "semi.temperature": 1.0, "semi.uncertainty_max": 0.2})
    root = tmp_path / "clients"
    dirs = {f"client{i}": make_client_dir(root, f"client{i}", per_class=5, seed=i, missing_class=i, unlabeled=3)
            for i in range(3)}
    prepared = {name: with_hidden_truth(prepare_client_data(d, config, LocalStore(d).feature_cache_dir, name))
                for name, d in dirs.items()}

    inprocess_state, history = run_inprocess(config, prepared, tmp_path / "inprocess")
    grpc_state = run_thread_federation(config, dirs, tmp_path / "grpc", prepared=prepared)[0].coordinator.state

    assert set(grpc_state) == set(inprocess_state) and any(k.startswith("c.") for k in grpc_state)
    for name, value in inprocess_state.items():
        np.testing.assert_allclose(grpc_state[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert any(np.abs(v).max() > 0 for k, v in grpc_state.items() if k.startswith("c."))

    grpc_metrics = [json.loads(line) for line in (tmp_path / "grpc" / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in grpc_metrics] == [m["round"] for m in history] == [1, 2, 3, 4]
    for ours, theirs in zip(history, grpc_metrics):
        assert ours["n_updates"] == theirs["n_updates"] == 2
        for key in ("pseudo_taken", "pseudo_correct", "pseudo_with_truth"):
            assert ours[key] == theirs[key], key
    taken = np.sum([m["pseudo_taken"] for m in grpc_metrics], axis=0)
    correct = np.sum([m["pseudo_correct"] for m in grpc_metrics], axis=0)
    assert taken.sum() > 0, "no pseudo-label was taken: the end-to-end count is untested"
    assert (correct <= taken).all() and sum(m["pseudo_with_truth"] for m in grpc_metrics) == taken.sum()
