"""benchmarks/privacy.py at tiny sizes on a generated corpus laid out like nemo4 (with a gender column)."""

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

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "privacy.py"
SPELLINGS = ["neu", "joy", "sadness", "ang"]


def gendered_corpus(root: Path, per_class: int = 6, gender_column: bool = True) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for s, gender in enumerate(["female", "male", "female", "male"]):
        for cls, emotion in enumerate(SPELLINGS):
            for i in range(per_class):
                rel = f"wav/v{s}/{emotion}_{i}.wav"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(root / rel, synth_clip(cls, rng, seconds=0.3), 16_000)
                rows.append([rel, f"v{s}", emotion, gender][: 4 if gender_column else 3])
    header = ["path", "speaker", "emotion", "gender"][: 4 if gender_column else 3]
    with open(root / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return root


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=280, env=env)


@pytest.mark.timeout(600)  # three invocations of the script
def test_a_tiny_run_prints_the_table_and_the_headline_lines(tmp_path: Path) -> None:
    corpus = gendered_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    proc = run(["--corpus", str(corpus), "--quick", "--folds", "2", "--attack-rounds", "4", "--rounds", "4",
                "--epsilons", "8,inf", "--workers", "1", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()[-5:]
    assert re.fullmatch(r"attack_uar\[none\] = [01]\.\d\d", lines[0])
    assert re.fullmatch(r"attack_uar\[secagg\] = [01]\.\d\d", lines[1])
    epsilon = re.fullmatch(r"attack_uar\[secagg\+dp\] = [01]\.\d\d \(epsilon ([\d.]+)\)", lines[2])
    assert epsilon and float(epsilon.group(1)) == pytest.approx(8.0, rel=0.01)  # the accountant spent the target
    assert re.fullmatch(r"emotion_uar_cost\[secagg\] = -?\d+\.\d\d", lines[3])
    assert re.fullmatch(r"emotion_uar_cost\[secagg\+dp\] = -?\d+\.\d\d", lines[4])
    table = (out / "privacy.md").read_text()
    assert "python benchmarks/privacy.py" in table
    for row in ("| none | each update |", "| secagg | round sums (unmixed) |", "| secagg+dp@8 | round sums (unmixed) |",
                "| secagg+dp@∞ | round sums (unmixed) |"):
        assert row in table
    # 2 female x 2 male speakers: 4 folds, each holding out one of each
    assert "Attack: 4 folds" in table
    # the paper's attacker (its own shadow updates on every round's model) is reported beside the received-update one
    assert "| none | each update | its own shadow updates, on every round's model (" in table
    assert "| none | each update | the shadow clients' updates it received |" in table
    assert "PARTIAL" not in table

    # a run stopped early: its saved results still make a report, marked partial, with the missing rows named
    saved = json.loads((out / "privacy.json").read_text())
    saved["partial"] = True
    saved["attack"] = [a for a in saved["attack"] if a["defence"] != "secagg+dp@∞"]
    del saved["emotion"]["secagg+dp@∞"]
    (out / "privacy.json").write_text(json.dumps(saved))
    proc = run(["--corpus", str(corpus), "--report-from", str(out / "privacy.json"), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.fullmatch(r"attack_uar\[none\] = [01]\.\d\d", proc.stdout.strip().splitlines()[-5])
    table = (out / "privacy.md").read_text()
    assert "PARTIAL" in table
    assert "| secagg+dp@∞ | round sums (unmixed) | the shadow clients' estimates | (not run) |" in table

    # resuming it runs only the missing rows and completes the report
    proc = run(["--corpus", str(corpus), "--quick", "--folds", "2", "--attack-rounds", "4", "--rounds", "4",
                "--epsilons", "8,inf", "--workers", "1", "--resume", str(out / "privacy.json"), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ran = [line.split()[:5] for line in proc.stdout.splitlines() if re.match(r"  (fold \d+ )?seed \d+ ", line)]
    assert ran == [["seed", "0", "secagg+dp@∞", "sums/first", "layer:"], ["fold", "0", "seed", "0", "secagg+dp@∞"]]
    table = (out / "privacy.md").read_text()
    assert "PARTIAL" not in table and "(not run)" not in table and "resumed" in table


def test_a_corpus_without_genders_is_refused_in_one_line(tmp_path: Path) -> None:
    corpus = gendered_corpus(tmp_path / "corpus", per_class=1, gender_column=False)
    proc = run(["--corpus", str(corpus), "--quick", "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"privacy.py: error: {corpus / 'manifest.csv'} has no gender column: "
                                                "the attack needs each speaker's gender"]
