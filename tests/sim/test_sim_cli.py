"""`fedser-sim` as a researcher runs it: Semi-FedSER with hidden labels and a held-out speaker over real
gRPC, and one-line errors for settings that cannot work."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.observability.conftest import make_corpus


def _sim(tmp_path: Path, *args: str, timeout: float = 280) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fedser_sim.cli", "--out", str(tmp_path / "run"), "--workers", "1",
                           "--feature-cache", str(tmp_path / "cache"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.timeout(300)
def test_semi_fedser_with_hidden_labels_and_a_held_out_speaker_over_grpc(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", speakers=4, per_class=4)
    proc = _sim(tmp_path, "--corpus", str(corpus), "--clients", "3", "--rounds", "3", "--eval-every", "1",
                "--algorithm", "scaffold", "--semi", "--semi-method", "fixmatch", "--label-rate", "0.5",
                "--test-speakers", "1", "--fraction", "1.0", "--min-clients", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "held-out UAR" in out and "pseudo-labels" in out and "held-out speakers: UAR" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (held_out,) = summary["test_speakers"]
    assert "3" in summary["held_out_uar"] and 0.0 <= summary["held_out_uar"]["3"] <= 1.0
    # FixMatch looks at every unlabeled clip of every sampled client in every round
    assert all(m["pseudo_candidates"] > 0 for m in summary["rounds"]) and summary["rounds"][-1]["method"] == "fixmatch"
    report = tmp_path / "run" / "server" / "report" / "report.html"
    assert report.is_file() and str(report) in out.replace("\n", "")

    labeled = hidden = 0
    for labels in (tmp_path / "run" / "clients").glob("*/labels.csv"):
        rows = list(csv.DictReader(open(labels, encoding="utf-8")))
        assert not any(held_out in r["path"] for r in rows), "a held-out speaker's file was given to a client"
        labeled += sum(1 for r in rows if r["emotion"])
        hidden += sum(1 for r in rows if not r["emotion"] and r["hidden_emotion"])
    assert labeled == hidden == 24  # 3 training speakers x 16 files, half of each client's labels hidden

    # the same command again in the same run dir is a new federation: no c_i or pseudo-labels carried over
    again = _sim(tmp_path, "--corpus", str(corpus), "--clients", "3", "--rounds", "3", "--eval-every", "1",
                 "--algorithm", "scaffold", "--semi", "--semi-method", "fixmatch", "--label-rate", "0.5",
                 "--test-speakers", "1", "--fraction", "1.0", "--min-clients", "3")
    assert again.returncode == 0, again.stderr[-3000:]
    repeat = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert repeat["held_out_uar"] == summary["held_out_uar"]
    assert [(m.get("uar"), m["pseudo_taken"]) for m in repeat["rounds"]] == [(m.get("uar"), m["pseudo_taken"]) for m in summary["rounds"]]


@pytest.mark.parametrize(("args", "needle"), [
    (["--label-rate", "0"], "--label-rate must be in (0, 1]"),
    (["--label-rate", "1.5"], "--label-rate must be in (0, 1]"),
    (["--test-speakers", "2"], "leaves no training speaker"),
    (["--clients", "9", "--test-speakers", "1"], "cannot make 9 clients"),
    (["--label-rate", "0.1"], "it can train only with --semi"),
    (["--labeled-speakers", "1"], "it can train only with --semi"),
    (["--labeled-speakers", "2", "--semi"], "leaves no label-free speaker"),
    (["--labeled-speakers", "1", "--label-rate", "0.5"], "give one"),
])
def test_settings_that_cannot_work_are_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    corpus = make_corpus(tmp_path / "corpus", speakers=2, per_class=1)
    proc = _sim(tmp_path, "--corpus", str(corpus), "--rounds", "1", "--clients", "2", *args, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and needle in errors[0], proc.stderr


@pytest.mark.timeout(300)
def test_labeled_speakers_keep_every_label_and_the_others_none_and_precision_is_shown(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", speakers=3, per_class=4)
    proc = _sim(tmp_path, "--corpus", str(corpus), "--clients", "3", "--rounds", "3", "--engine", "inprocess",
                "--algorithm", "scaffold", "--semi", "--semi-method", "fixmatch", "--labeled-speakers", "1",
                "--fraction", "1.0", "--min-clients", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_client = []
    for labels in sorted((tmp_path / "run" / "clients").glob("*/labels.csv")):
        rows = list(csv.DictReader(open(labels, encoding="utf-8")))
        per_client.append((sum(1 for r in rows if r["emotion"]), sum(1 for r in rows if r.get("hidden_emotion"))))
    assert sorted(per_client) == [(0, 16), (0, 16), (16, 0)]  # one speaker per client, one of them labeled
    line = next(x for x in proc.stdout.splitlines() if x.startswith("pseudo-labels:"))
    assert "right; by class:" in line or "none taken" in line


def test_a_corpus_whose_emotions_are_all_ignored_names_them(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", speakers=2, per_class=1)
    rows = list(csv.reader(open(corpus / "manifest.csv")))
    with open(corpus / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([rows[0], *([p, s, "surprise"] for p, s, _ in rows[1:])])
    proc = _sim(tmp_path, "--corpus", str(corpus), "--rounds", "1", "--clients", "2", timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no rows with an emotion the label map names (found: surprise 8)" in proc.stderr
