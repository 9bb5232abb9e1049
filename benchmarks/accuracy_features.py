"""One accuracy table per feature set, from `benchmarks/accuracy.py --feature NAME --out DIR` runs.

    python benchmarks/accuracy_features.py --run emobase=DIR [--run egemaps=DIR ...] [--out FILE]

Each DIR is an accuracy.py output folder (accuracy.json, accuracy.md); a feature set may take
several (e.g. its centralized/fedavg cells and its 2-labeled-speaker cells run apart). Per set:
UAR per cell (mean ± std over folds x seeds), fedavg − centralized and each semi-supervised
cell − supervised with the same labels, paired on fold and seed, with the 95% CI over the pairs
and the fold-clustered one (mean over the seeds of a fold, Student t over folds: the seeds of
a fold share its test speakers), and each run's command, machine, load, commit and wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, markdown_table  # noqa: E402

SEMI = ("mvpl", "fixmatch", "semi")
Record = dict[str, Any]  # one run of accuracy.json


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t confidence interval."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Paired:
    pairs: int
    folds: int
    mean: float                       # UAR points
    ci95_pairs: tuple[float, float]   # Student t over the (fold, seed) pairs
    ci95_folds: tuple[float, float]   # Student t over the per-fold means
    up: int                           # pairs where the cell beat its baseline


def paired(ours: list[Record], theirs: list[Record]) -> Paired | None:
    """`ours` − `theirs` in UAR points on the same (fold, seed): pair CI and fold-clustered CI."""
    mine = {(r["fold"], r["seed"]): float(r["uar"]) for r in ours}
    base = {(r["fold"], r["seed"]): float(r["uar"]) for r in theirs}
    keys = sorted(set(mine) & set(base))
    if not keys:
        return None
    diffs = {k: 100 * (mine[k] - base[k]) for k in keys}
    by_fold: dict[object, list[float]] = defaultdict(list)
    for (fold, _seed), diff in diffs.items():
        by_fold[fold].append(diff)
    pair = t_interval(list(diffs.values()))
    fold = t_interval([statistics.fmean(v) for v in by_fold.values()])
    return Paired(len(keys), len(by_fold), pair[0], (pair[1], pair[2]), (fold[1], fold[2]),
                  sum(d > 0 for d in diffs.values()))


def _pm(values: list[float]) -> str:
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * std:.1f}"


def _ci(low_high: tuple[float, float]) -> str:
    low, high = low_high
    return f"[{low:+.1f}, {high:+.1f}]"


def _header(markdown: str) -> str:
    """What an accuracy.md says before its table: the command, machine facts, commit, load and wall time."""
    lines = markdown.splitlines()[1:]
    end = next((i for i, line in enumerate(lines) if line.startswith("| ")), len(lines))
    return "\n".join(lines[:end]).strip()


def section(feature: str, folders: list[Path], cells: set[str] | None = None) -> tuple[str, dict[str, Any]]:
    records: list[Record] = []
    seen: set[tuple[object, object, object]] = set()
    ignored: dict[str, int] = defaultdict(int)
    for folder in folders:
        for record in json.loads((folder / "accuracy.json").read_text())["runs"]:
            key = (record["cell"], record["fold"], record["seed"])
            if cells and record["cell"] not in cells:
                continue
            if key in seen:  # the same cell, fold and seed in an earlier folder: that one is kept
                ignored[folder.name] += 1
                continue
            seen.add(key)
            records.append(record)
    features = {r["feature"] for r in records}
    if features != {feature}:
        raise SystemExit(f"{feature}: the runs in {', '.join(map(str, folders))} are of {sorted(features)}")
    by_cell: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_cell[str(record["cell"])].append(record)
    rows = [[cell, len(runs), _pm([float(r["uar"]) for r in runs]),
             _pm([float(r["uar_window_mean"]) for r in runs]),
             f"{100 * statistics.fmean(float(r['val_uar']) for r in runs):.1f}",
             f"{statistics.fmean(float(r['wall_s']) for r in runs):.1f}"]
            for cell, runs in by_cell.items()]
    comparisons: list[tuple[str, str]] = [("fedavg", "centralized")]
    comparisons += [(cell, f"supervised@{cell.split('@', 1)[1].split('+')[0]}") for cell in by_cell
                    if cell.split("@")[0] in SEMI and "@" in cell]  # a strong-view suffix (+mixup) has the same baseline
    pair_rows: list[list[object]] = []
    found: dict[str, Any] = {}
    for cell, base in comparisons:
        if cell in by_cell and base in by_cell:
            result = paired(by_cell[cell], by_cell[base])
            if result is None:
                continue
            found[f"{cell} - {base}"] = asdict(result)
            pair_rows.append([cell, base, f"{result.mean:+.1f}", _ci(result.ci95_pairs), _ci(result.ci95_folds),
                              f"{result.up}/{result.pairs}"])
    text = [f"## {feature}\n", markdown_table(["cell", "runs", "test UAR % (selected round)", "window mean",
                                                 "val UAR %", "wall s/run"], rows), ""]
    if pair_rows:
        text += [markdown_table(["cell", "baseline", "Δ points", "95% CI (pairs)", "95% CI (fold-clustered)", "pairs up"],
                                pair_rows), ""]
    for folder in folders:
        again = f" ({ignored[folder.name]} runs also found in an earlier folder are taken from there)" if ignored[folder.name] else ""
        text += [f"From `{folder}/`{again}:\n", _header((folder / "accuracy.md").read_text()), ""]
    return "\n".join(text), {"runs": records, "paired": found}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[], metavar="FEATURE=DIR", required=True,
                        help="an accuracy.py output folder and its feature set (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy_features.md")
    parser.add_argument("--cells", default=None, help="comma-separated cells to show (default: every cell of the runs)")
    parser.add_argument("--preamble", type=Path, default=None, help="markdown put before the tables")
    args = parser.parse_args()
    folders: dict[str, list[Path]] = defaultdict(list)
    for item in args.run:
        feature, sep, folder = item.partition("=")
        if not sep or not (Path(folder) / "accuracy.json").is_file():
            parser.error(f"--run needs FEATURE=DIR with DIR/accuracy.json, got '{item}'")
        folders[feature].append(Path(folder))
    parts: list[str] = []
    data: dict[str, dict[str, Any]] = {}
    for feature, dirs in folders.items():
        text, data[feature] = section(feature, dirs, set(args.cells.split(",")) if args.cells else None)
        parts.append(text)
    preamble = args.preamble.read_text() if args.preamble else "# Accuracy per feature set\n"
    args.out.write_text(preamble.rstrip() + "\n\n" + "\n".join(parts))
    args.out.with_suffix(".json").write_text(json.dumps({f: d["paired"] for f, d in data.items()}, indent=1))
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
