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


@pytest.fixture
def two_node_cluster(monkeypatch: pytest.MonkeyPatch):
    """A Ray head and a second node on this machine; only the second declares the `fedser_client` resource."""
    from ray.cluster_utils import Cluster

    # the machine is shared: no other process's bare `ray.init()` should find this cluster as "the current one"
    monkeypatch.setattr(ray._private.utils, "write_ray_address", lambda *args, **kwargs: None)
    monkeypatch.setattr(ray._common.utils, "reset_ray_address", lambda *args, **kwargs: None)
    small = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    try:
        second = cluster.add_node(**small, resources={"fedser_client": 4})
        cluster.wait_for_nodes(timeout=60)
        yield cluster, second.node_id
    finally:
        cluster.shutdown()


@pytest.mark.timeout(240)
def test_clients_on_another_node_get_their_data_through_ray(tmp_path: Path, two_node_cluster) -> None:
    """Actors pinned to the second node train from the features the head sent them, not from its client dirs."""
    from fedser_shared.config import load_run_config, to_toml
    from fedser_sim.corpus import partition_by_speaker, read_manifest, write_client_dir
    from fedser_sim.ray_engine import CLIENTS_FILE, run_ray

    cluster, second_node = two_node_cluster
    corpus = make_corpus(tmp_path / "corpus", speakers=2, per_class=3)
    config = load_run_config(None, {"federation.rounds": 2, "federation.fraction": 1.0, "federation.eval_every": 1,
                                    "federation.poll_timeout_s": 2.0})
    config_path = tmp_path / "run.toml"
    config_path.write_text(to_toml(config))
    utterances, _ = read_manifest(corpus, config.labels)
    client_dirs = [write_client_dir(corpus, part, tmp_path / "run" / "clients" / f"client{i}")
                   for i, part in enumerate(partition_by_speaker(utterances, 2, config.federation.seed))]

    metrics = run_ray(config_path, client_dirs, tmp_path / "run", 2, lambda _: None, timeout_s=150,
                      ray_address=cluster.address, actor_resources={"fedser_client": 1})

    assert [m["round"] for m in metrics] == [1, 2]
    assert all(m["n_updates"] == 2 and 0.0 <= m["uar"] <= 1.0 for m in metrics)
    reports = json.loads((tmp_path / "run" / "logs" / CLIENTS_FILE).read_text())
    assert [(r["name"], r["node_id"], r["trained"], r["shutdown"]) for r in reports] == [
        ("client0", second_node, [1, 2], True), ("client1", second_node, [1, 2], True)]
    # the daemons kept their state on their own node: nothing was written into the head's client dirs
    assert not any((folder / ".fedser" / "client.json").exists() for folder in client_dirs)
    assert not ray.is_initialized()
