"""The case Semi-FedSER exists for: most devices hold no labels at all.

A label-free client pseudo-labels with the global model from its first participation; when it has
nothing to train on yet, it sends an empty update (n_samples 0) that the server acks and counts
without aggregating. Both engines reach the same state, and no refusal the client can recover from
makes it leave the federation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fedser_client.core.trainer import LocalTrainer
from fedser_client.local_store import LocalStore
from fedser_client.prepare import prepare_client_data
from fedser_shared.config import RunConfig, load_run_config
from fedser_sim.inprocess_engine import run_inprocess
from tests.conftest import make_client_dir
from tests.integration.federation import run_thread_federation
from tests.integration.test_engines_agree import with_hidden_truth

ROUNDS = 4


def _config(method: str) -> RunConfig:
    return load_run_config(None, {
        "federation.algorithm": "scaffold", "federation.rounds": ROUNDS, "federation.fraction": 1.0,
        "federation.min_clients": 4, "federation.eval_every": 2, "federation.poll_timeout_s": 2.0,
        "federation.round_timeout_s": 60.0, "federation.seed": 5, "train.lr": 0.1,
        "semi.enabled": True, "semi.method": method,
        # loosened so that a barely trained model pseudo-labels within 4 rounds
        "semi.tau_start": 0.3, "semi.tau_end": 0.35, "semi.temperature": 1.0, "semi.uncertainty_max": 0.2,
        "semi.max_per_class": 2, "semi.fixmatch_threshold": 0.3})


def _federation(root: Path) -> dict[str, Path]:
    """One client with labels, three with none."""
    dirs = {"labeled": make_client_dir(root, "labeled", per_class=5, seed=0)}
    for i in range(1, 4):
        dirs[f"unlabeled{i}"] = make_client_dir(root, f"unlabeled{i}", per_class=4, seed=i, unlabeled=4)
    return dirs


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", ["mvpl", "fixmatch"])
def test_label_free_clients_take_pseudo_labels_over_grpc_and_in_process(tmp_path: Path, method: str) -> None:
    config = _config(method)
    dirs = _federation(tmp_path / "clients")
    prepared = {name: with_hidden_truth(prepare_client_data(d, config, LocalStore(d).feature_cache_dir, name))
                for name, d in dirs.items()}
    assert all(p.data.label_counts(4).sum() == 0 for n, p in prepared.items() if n != "labeled")

    inprocess_state, history = run_inprocess(config, prepared, tmp_path / "inprocess")
    server, results = run_thread_federation(config, dirs, tmp_path / "grpc", prepared=prepared)

    for name, result in results.items():  # every client stayed and trained in every round
        assert result.shutdown and result.rounds_trained == list(range(1, ROUNDS + 1)), name
    grpc_state = server.coordinator.state
    for key, value in inprocess_state.items():
        np.testing.assert_allclose(grpc_state[key], value, rtol=1e-5, atol=1e-6, err_msg=key)

    grpc_metrics = [json.loads(line) for line in (tmp_path / "grpc" / "metrics.jsonl").read_text().splitlines()]
    for ours, theirs in zip(history, grpc_metrics, strict=True):
        for key in ("n_updates", "n_empty_updates", "pseudo_taken", "pseudo_correct", "pseudo_candidates", "pass_tau"):
            assert ours[key] == theirs[key], key
    # the labeled client has no unlabeled clip, so every pseudo-label was taken on a label-free client
    assert sum(sum(m["pseudo_taken"]) for m in grpc_metrics) > 0, "no pseudo-label was taken"
    assert all(m["n_updates"] == 4 for m in grpc_metrics)
    if method == "mvpl":  # the pool each label-free client keeps on its own disk
        for name in ("unlabeled1", "unlabeled2", "unlabeled3"):
            pool = LocalStore(dirs[name]).load_state(prepared[name].train_paths).pseudo_index
            assert len(pool) > 0, f"{name} took no pseudo-label"


@pytest.mark.timeout(300)
def test_a_client_whose_update_is_refused_stays_for_the_next_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_run_config(None, {
        "federation.rounds": 3, "federation.fraction": 1.0, "federation.min_clients": 2,
        "federation.min_updates": 1, "federation.poll_timeout_s": 2.0, "federation.round_timeout_s": 60.0})
    dirs = {f"client{i}": make_client_dir(tmp_path / "clients", f"client{i}", per_class=3, seed=i) for i in range(2)}
    prepared = {name: prepare_client_data(d, config, LocalStore(d).feature_cache_dir, name) for name, d in dirs.items()}
    original, lied = LocalTrainer.train, []

    def train_claiming_too_much_once(self: LocalTrainer, *args: object) -> tuple:
        update, state, report = original(self, *args)  # type: ignore[arg-type]
        if self.data is prepared["client0"].data and not lied:  # more samples than declared: INVALID_ARGUMENT
            lied.append(report.metrics.n_samples)
            report = dataclasses.replace(report, metrics=dataclasses.replace(report.metrics, n_samples=10**6))
        return update, state, report

    monkeypatch.setattr(LocalTrainer, "train", train_claiming_too_much_once)
    _server, results = run_thread_federation(config, dirs, tmp_path / "grpc", prepared=prepared)

    assert lied and results["client0"].shutdown, "the refused client left the federation"
    metrics = [json.loads(line) for line in (tmp_path / "grpc" / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3]
    # the refused update is dropped; the client asks again, retrains round 1 and is in every round
    assert metrics[0]["refused"] == {"invalid_update": 1} and [m["n_updates"] for m in metrics] == [2, 2, 2]
    assert results["client0"].rounds_trained == [1, 2, 3]
