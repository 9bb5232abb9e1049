"""benchmarks/accuracy_features.py: the per-feature tables pair runs by fold and seed and cluster the CI by fold."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "accuracy_features.py"


def _write_run(folder: Path, feature: str, uars: dict[tuple[str, int, int], float]) -> Path:
    folder.mkdir(parents=True)
    runs = [{"feature": feature, "cell": cell, "fold": fold, "seed": seed, "uar": uar, "uar_window_mean": uar,
             "val_uar": 0.5, "wall_s": 1.0} for (cell, fold, seed), uar in uars.items()]
    (folder / "accuracy.json").write_text(json.dumps({"runs": runs, "paired": []}))
    (folder / "accuracy.md").write_text(f"# Accuracy on corpus ({feature})\n\n```\npython benchmarks/accuracy.py\n```\n\n"
                                        "- commit: abc1234\n\n3 folds x 2 seeds, total wall time 1.0 min\n")
    return folder


def test_fedavg_against_centralized_with_pair_and_fold_clustered_intervals(tmp_path: Path) -> None:
    # fedavg - centralized per (fold, seed), in points: fold 0: +1, +3; fold 1: -1, +1; fold 2: +2, +4
    diffs = {(0, 0): 1.0, (0, 1): 3.0, (1, 0): -1.0, (1, 1): 1.0, (2, 0): 2.0, (2, 1): 4.0}
    uars = {("centralized", f, s): 0.6 for f, s in diffs}
    uars |= {("fedavg", f, s): 0.6 + d / 100 for (f, s), d in diffs.items()}
    base = _write_run(tmp_path / "base", "egemaps", uars)
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--run", f"egemaps={base}", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.with_suffix(".json").read_text())["egemaps"]["fedavg - centralized"]
    assert result["pairs"] == 6 and result["folds"] == 3 and result["up"] == 5
    assert math.isclose(result["mean"], 10 / 6)
    fold_means = [2.0, 0.0, 3.0]  # the seeds of a fold averaged; t(0.975, 2) = 4.3027
    half = 4.302653 * statistics.stdev(fold_means) / math.sqrt(3)
    assert math.isclose(result["ci95_folds"][0], statistics.fmean(fold_means) - half, abs_tol=1e-3)
    assert math.isclose(result["ci95_folds"][1], statistics.fmean(fold_means) + half, abs_tol=1e-3)
    assert result["ci95_folds"][1] - result["ci95_folds"][0] > result["ci95_pairs"][1] - result["ci95_pairs"][0]
    table = out.read_text()
    assert "## egemaps" in table and "| fedavg | centralized | +1.7 |" in table and "commit: abc1234" in table


def test_runs_of_another_feature_set_are_refused(tmp_path: Path) -> None:
    base = _write_run(tmp_path / "base", "emobase", {("fedavg", 0, 0): 0.5})
    proc = subprocess.run([sys.executable, str(SCRIPT), "--run", f"compare={base}", "--out", str(tmp_path / "t.md")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "compare: the runs in" in proc.stderr and "emobase" in proc.stderr


def test_each_semi_cell_is_paired_with_supervised_on_the_same_labels(tmp_path: Path) -> None:
    uars = {}
    for fold in range(2):
        for seed in range(2):
            uars[("supervised@spk2", fold, seed)] = 0.50
            uars[("mvpl@spk2", fold, seed)] = 0.52 + 0.01 * seed
            uars[("fixmatch@spk2+mixup", fold, seed)] = 0.49
    base = _write_run(tmp_path / "spk2", "compare", uars)
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--run", f"compare={base}", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    paired = json.loads(out.with_suffix(".json").read_text())["compare"]
    assert set(paired) == {"mvpl@spk2 - supervised@spk2", "fixmatch@spk2+mixup - supervised@spk2"}
    assert math.isclose(paired["mvpl@spk2 - supervised@spk2"]["mean"], 2.5)
    assert math.isclose(paired["fixmatch@spk2+mixup - supervised@spk2"]["mean"], -1.0)
    assert paired["fixmatch@spk2+mixup - supervised@spk2"]["up"] == 0


def test_a_run_found_in_two_folders_counts_once(tmp_path: Path) -> None:
    first = _write_run(tmp_path / "base", "emobase", {("centralized", 0, 0): 0.60, ("fedavg", 0, 0): 0.61})
    again = _write_run(tmp_path / "all", "emobase", {("centralized", 0, 0): 0.60, ("supervised@spk2", 0, 0): 0.5})
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--run", f"emobase={first}", "--run", f"emobase={again}",
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    table = out.read_text()
    assert "| centralized | 1 |" in table and "| supervised@spk2 | 1 |" in table
    assert "(1 runs also found in an earlier folder are taken from there)" in table
