"""benchmarks/accuracy.py on a tiny generated corpus laid out like nemo4, and its bad-input boundary."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import synth_clip

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy.py"
# emotion spellings and speaker names unlike nemo4's: nothing may depend on them
SPELLINGS = ["neu", "joy", "sadness", "ang"]


def tiny_corpus(root: Path, speakers: int = 5, per_class: int = 8) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for s in range(speakers):
        for cls, emotion in enumerate(SPELLINGS):
            for i in range(per_class):
                rel = f"wav/spk{s}/{emotion}_{i}.wav"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(root / rel, synth_clip(cls, rng, seconds=0.3), 16_000)
                rows.append([rel, f"spk{s}", emotion])
    with open(root / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "speaker", "emotion"], *rows])
    return root


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=280, env=env)


@pytest.mark.timeout(300)
def test_a_small_protocol_writes_table_paired_differences_records_and_plot(tmp_path: Path) -> None:
    corpus = tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    proc = run(["--corpus", str(corpus), "--folds", "3", "--only-folds", "0,1", "--rounds", "5", "--seeds", "2",
                "--workers", "1", "--views", "sfa,style",
                "--cells", "supervised@spk1,semifedser@spk1,scaffold@10~2class,fedavg@10~2class",
                "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.fullmatch(r"mvpl@spk1 test UAR % = \d+\.\d\d", proc.stdout.strip().splitlines()[-1])
    results = json.loads((out / "accuracy.json").read_text())
    runs = [r for r in results["runs"] if "chosen" not in r]
    cells = {(r["cell"], r["fold"], r["seed"]) for r in runs}
    assert cells == {(c, f, s) for c in ("supervised@spk1", "mvpl@spk1", "mvpl@spk1+style", "scaffold@10~2class",
                                         "fedavg@10~2class") for f in (0, 1) for s in (0, 1)}
    for r in runs:
        assert all(0 <= r[k] <= 1 for k in ("uar", "uar_last", "uar_window_mean", "labeled_share"))
        if r["cell"].endswith("@10~2class"):  # 10% of the rows keep their label, not 1 per class and shard
            assert 0.05 < r["labeled_share"] < 0.15
        else:  # one of the two training speakers keeps every label
            assert 0.3 < r["labeled_share"] < 0.7
        if r["cell"].startswith("mvpl"):  # pseudo-labels counted per class and per training speaker
            assert sum(r["pseudo_class_taken"]) == r["pseudo_taken"] == sum(n for n, _, _ in r["pseudo_speakers"].values())
    # each fold's nested row is the view with the better validation score in that fold, with that view's runs
    nested = [r for r in results["runs"] if r["cell"] == "mvpl@spk1+nested"]
    assert len(nested) == 4
    for fold in (0, 1):
        val = {c: np.mean([r["val_window_mean"] for r in runs if r["cell"] == c and r["fold"] == fold])
               for c in ("mvpl@spk1", "mvpl@spk1+style")}
        chosen = max(val, key=lambda c: (val[c], c == "mvpl@spk1"))
        assert results["nested_choices"]["mvpl@spk1+nested"][str(fold)] == chosen
        assert {r["chosen"] for r in nested if r["fold"] == fold} == {chosen}
    pairs = {(p["cell"], p["baseline"]): p for p in results["paired"]}
    assert set(pairs) == {("mvpl@spk1", "supervised@spk1"), ("mvpl@spk1+style", "supervised@spk1"),
                          ("mvpl@spk1+nested", "supervised@spk1"), ("scaffold@10~2class", "fedavg@10~2class")}
    for p in pairs.values():
        assert p["pairs"] == 4 and p["folds"] == 2 and len(p["uar"]["ci95"]) == 2 and len(p["uar"]["ci95_fold"]) == 2
    table = (out / "accuracy.md").read_text()
    assert "python benchmarks/accuracy.py" in table and "| supervised@spk1 | lack1 | 1 labeled speakers |" in table
    assert "## Paired differences" in table and "| mvpl@spk1 | supervised@spk1 |" in table
    assert "95% CI, fold-clustered" in table and "## Nested choices" in table and "## Where pseudo-labels go wrong" in table
    # KFold(3) over 5 sorted speakers: fold 0 tests spk0, spk1; spk2 validates; 2 speakers x 4 shards train
    assert "fold 0: test spk0, spk1; validation spk2; 2 training speakers -> 8 clients" in table
    assert (out / "accuracy_curves.png").stat().st_size > 0

    # a cut run is finished from its log: the runs found there are taken, not trained again
    again = run(["--corpus", str(corpus), "--folds", "3", "--only-folds", "0,1", "--rounds", "5", "--seeds", "2",
                 "--workers", "1", "--views", "sfa,style", "--reuse", str(out / "accuracy_runs.jsonl"),
                 "--cells", "supervised@spk1,semifedser@spk1,scaffold@10~2class,fedavg@10~2class",
                 "--out", str(tmp_path / "again")], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "again" / "accuracy.json").read_text())["runs"] == results["runs"]


def test_fold_clustered_interval_treats_a_fold_as_one_observation() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    from accuracy import fold_clustered_difference, paired_difference

    by_fold = {0: [1.0, 1.2, 0.8], 1: [3.0, 3.1, 2.9], 2: [-1.0, -0.9, -1.1]}
    mean, low, high = fold_clustered_difference(by_fold)
    pooled = paired_difference([d for v in by_fold.values() for d in v])
    assert mean == pytest.approx(1.0) and (low, high) == pytest.approx(paired_difference([1.0, 3.0, -1.0])[1:])
    assert high - low > pooled[2] - pooled[1]  # 9 near-copies of 3 observations do not narrow the interval


def test_ignored_emotions_are_counted(tmp_path: Path) -> None:
    corpus = tiny_corpus(tmp_path / "corpus", speakers=5, per_class=2)
    with open(corpus / "manifest.csv", "a", newline="") as handle:
        csv.writer(handle).writerows([["wav/spk0/neu_0.wav", "spk0", "surprise"], ["wav/spk0/neu_1.wav", "spk0", "fear"]])
    proc = run(["--corpus", str(corpus), "--quick", "--folds", "3", "--rounds", "2", "--workers", "1",
                "--cells", "fedavg", "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ignored 2 clips whose emotion the label map does not name: fear 1, surprise 1" in proc.stderr


def test_a_missing_corpus_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run(["--corpus", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "corpus directory not found" in proc.stderr


@pytest.mark.parametrize(("cells", "message"), [
    ("fedprox", "unknown method 'fedprox'"), ("scaffold~3class", "unknown partition '3class'"),
    ("mvpl@spk2+blur", "unknown view 'blur'"), ("fedavg+mixup", "fedavg takes none"),
    ("mvpl@spkx", "'spkx' needs a positive number"), ("centralized@10", "centralized pools every label")])
def test_a_bad_cell_is_named(tmp_path: Path, cells: str, message: str) -> None:
    proc = run(["--cells", cells, "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.strip().count("\n") == 0
