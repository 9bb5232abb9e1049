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
def test_a_small_protocol_writes_table_records_and_plot(tmp_path: Path) -> None:
    corpus = tiny_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    proc = run(["--corpus", str(corpus), "--folds", "3", "--only-folds", "0", "--rounds", "5", "--seeds", "1",
                "--workers", "1", "--cells", "fedavg,semifedser@40", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.fullmatch(r"semifedser@40 test UAR % = \d+\.\d\d", proc.stdout.strip().splitlines()[-1])
    records = json.loads((out / "accuracy.json").read_text())
    assert {(r["method"], r["label_rate"]) for r in records} == {("fedavg", 1.0), ("semifedser", 0.4)}
    assert all(set(r) == {"feature", "method", "label_rate", "fold", "seed", "uar", "wall_s"} and 0 <= r["uar"] <= 1
               for r in records)
    table = (out / "accuracy.md").read_text()
    assert "python benchmarks/accuracy.py" in table and "| fedavg | 100% |" in table
    # KFold(3) over 5 sorted speakers: fold 0 tests spk0, spk1; spk2 validates; 2 speakers x 4 shards train
    assert "fold 0: test spk0, spk1; validation spk2; 2 training speakers -> 8 clients" in table
    assert (out / "accuracy_curves.png").stat().st_size > 0


def test_a_missing_corpus_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run(["--corpus", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "corpus directory not found" in proc.stderr


def test_an_unknown_method_is_named(tmp_path: Path) -> None:
    proc = run(["--cells", "fedprox", "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 2 and "unknown method 'fedprox'" in proc.stderr
