"""Client daemons training on CUDA over real gRPC (runs only where torch sees a GPU; CI has none).

With no randomness in the local step (full batch, no dropout, no augmentation) a CUDA federation and a CPU
federation must reach the same global state; with Semi-FedSER on, the CUDA clients pseudo-label and train.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedser_client.core.data import UNLABELED, ClientData, zscore
from fedser_client.prepare import PreparedData
from fedser_shared.config import FEATURE_DIMS, RunConfig, load_run_config
from tests.integration.federation import run_thread_federation

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DIM = FEATURE_DIMS["emobase"]


def synthetic_clients(n_clients: int = 3, rows: int = 100, labeled: float = 1.0) -> dict[str, PreparedData]:
    prepared = {}
    for i in range(n_clients):
        rng = np.random.default_rng(i)
        truth = rng.integers(0, 4, rows + 20)
        x = zscore(rng.normal(size=(len(truth), DIM)) + 0.2 * truth[:, None])  # as the client normalises
        y = truth[:rows].copy()
        y[rng.random(rows) >= labeled] = UNLABELED
        data = ClientData(x[:rows], y, x[rows:], truth[rows:], hidden_labels=np.where(y == UNLABELED, truth[:rows], UNLABELED))
        prepared[f"client{i}"] = PreparedData(data, [f"clip{i}_{r}.wav" for r in range(rows)], None, None)  # type: ignore[arg-type]
    return prepared


def federation(tmp_path: Path, config: RunConfig, prepared: dict[str, PreparedData], device: str) -> tuple[dict, list]:
    dirs = {name: tmp_path / device / name for name in prepared}
    for path in dirs.values():
        path.mkdir(parents=True)
    server, results = run_thread_federation(config, dirs, tmp_path / device / "state", prepared=prepared, device=device)
    assert all(r.shutdown for r in results.values())
    metrics = [json.loads(line) for line in (tmp_path / device / "state" / "metrics.jsonl").read_text().splitlines()]
    return server.coordinator.state, metrics


def base_config(**overrides: object) -> RunConfig:
    return load_run_config(None, {
        "federation.algorithm": "scaffold", "federation.rounds": 3, "federation.fraction": 1.0,
        "federation.min_clients": 3, "federation.eval_every": 1, "federation.poll_timeout_s": 2.0,
        "federation.round_timeout_s": 60.0, "train.lr": 0.05, **overrides})


@pytest.mark.timeout(300)
def test_cuda_clients_reach_the_cpu_clients_global_state(tmp_path: Path) -> None:
    config = base_config(**{"model.dropout": 0.0, "train.batch_size": 1000, "train.local_epochs": 3})
    prepared = synthetic_clients()
    cpu_state, _ = federation(tmp_path, config, prepared, "cpu")
    cuda_state, cuda_metrics = federation(tmp_path, config, prepared, "cuda")
    assert [m["round"] for m in cuda_metrics] == [1, 2, 3] and all(m["n_updates"] == 3 for m in cuda_metrics)
    assert any(name.startswith("c.") for name in cuda_state)
    for name, value in cpu_state.items():
        np.testing.assert_allclose(cuda_state[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.timeout(300)
def test_semi_fedser_trains_and_pseudo_labels_on_cuda(tmp_path: Path) -> None:
    config = base_config(**{"federation.rounds": 5, "train.local_epochs": 5, "train.lr": 0.1, "semi.enabled": True,
                            "semi.tau_start": 0.3, "semi.tau_end": 0.35, "semi.temperature": 1.0,
                            "semi.uncertainty_max": 0.2})
    _, metrics = federation(tmp_path, config, synthetic_clients(labeled=0.4), "cuda")
    assert [m["round"] for m in metrics] == [1, 2, 3, 4, 5]
    assert sum(sum(m["pseudo_taken"]) for m in metrics) > 0
    assert metrics[-1]["uar"] > 0.5  # chance is 0.25; the same run on CPU ends near 0.7
