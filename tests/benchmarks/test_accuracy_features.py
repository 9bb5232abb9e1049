"""benchmarks/accuracy.py --feature: the protocol runs on eGeMAPS or ComParE vectors, a misspelt set is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmarks.test_accuracy import run, tiny_corpus


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("feature", "dim"), [("egemaps", 88), ("compare", 6373)])
def test_the_protocol_runs_on_the_chosen_feature_set(tmp_path: Path, feature: str, dim: int) -> None:
    corpus = tiny_corpus(tmp_path / "corpus", per_class=3)
    out = tmp_path / "out"
    proc = run(["--corpus", str(corpus), "--feature", feature, "--quick", "--folds", "3", "--rounds", "3",
                "--workers", "1", "--cells", "centralized,fedavg", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = json.loads((out / "accuracy.json").read_text())["runs"]
    assert {r["cell"] for r in runs} == {"centralized", "fedavg"} and all(r["feature"] == feature for r in runs)
    assert all(0.0 <= r["uar"] <= 1.0 for r in runs)
    table = (out / "accuracy.md").read_text()
    assert table.startswith(f"# Accuracy on corpus ({feature})") and f"--feature {feature}" in table
    cached = list((tmp_path / "cache" / "fedser" / "features").glob(f"*/{feature}-*/meta.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["dim"] == dim


def test_a_misspelt_feature_set_names_the_field(tmp_path: Path) -> None:
    corpus = tiny_corpus(tmp_path / "corpus", speakers=5, per_class=1)
    proc = run(["--corpus", str(corpus), "--feature", "ComParE", "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "'features.name'" in proc.stderr and "'compare'" in proc.stderr
