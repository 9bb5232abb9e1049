"""Accuracy of centralized / FedAvg / SCAFFOLD / supervised SCAFFOLD / Semi-FedSER on a corpus (DESIGN §6).

    python benchmarks/accuracy.py [--corpus ../shared/data/nemo4] [--feature emobase] [--quick] [--out DIR]

Protocol: speakers sorted, KFold(5, shuffle=False) over them; in each fold the first training
speaker after the test speakers (cyclically) is the validation speaker, never trained on; every
other training speaker becomes C shards, shard j lacking class j, each class split evenly over
the shards that keep it; each shard keeps 20% for local evaluation and labels a seeded share of
the rest. Every shard, the validation speaker and each test speaker are z-scored with their own
statistics. The reported test UAR (pooled over the test speakers) is taken at the round with the
best validation-speaker UAR in the last 40% of rounds. The federated runs use the in-process
engine, i.e. the same Strategy and LocalTrainer objects as the gRPC system.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import headline, machine_facts, markdown_table, write_results  # noqa: E402

from fedser_client.core.data import UNLABELED, ClientData, split_train_eval, zscore  # noqa: E402
from fedser_client.core.trainer import LocalTrainer, stable_seed  # noqa: E402
from fedser_shared.config import LabelsConfig, RunConfig, load_run_config  # noqa: E402
from fedser_shared.errors import ConfigError, DataError, FedserError  # noqa: E402
from fedser_shared.metrics import uar  # noqa: E402
from fedser_sim.corpus import read_manifest  # noqa: E402
from fedser_sim.features import default_cache_dir, extract_corpus  # noqa: E402
from fedser_sim.inprocess_engine import federate, make_clients  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("centralized", "fedavg", "scaffold", "supervised", "semifedser")
SELECT_FRACTION = 0.4   # the reported round is chosen in the last 40% of rounds
DEFAULT_ROUNDS = 100    # see benchmarks/results/accuracy.md: validation UAR stops rising near round 100
CURVE_EVERY = 5         # before that window, evaluate every 5th round (for the plot only)


@dataclass(frozen=True)
class Cell:
    """One table cell: a method at a label rate."""

    method: str
    label_rate: float

    @property
    def key(self) -> str:
        return self.method if self.label_rate == 1.0 else f"{self.method}@{round(self.label_rate * 100)}"


DEFAULT_CELLS = (Cell("centralized", 1.0), Cell("fedavg", 1.0), Cell("scaffold", 1.0), Cell("supervised", 0.2),
                 Cell("semifedser", 0.2), Cell("supervised", 0.4), Cell("semifedser", 0.4))


@dataclass(frozen=True)
class Fold:
    index: int
    test: list[str]
    validation: str
    train: list[str]


def speaker_folds(speakers: list[str], n_folds: int) -> list[Fold]:
    """KFold(n_folds, shuffle=False) over sorted speakers, plus the cyclic validation speaker."""
    from sklearn.model_selection import KFold

    ordered = sorted(speakers)
    if len(ordered) < n_folds + 2:
        raise DataError(f"{len(ordered)} speakers cannot make {n_folds} folds with a validation and a training speaker")
    folds = []
    for index, (train_idx, test_idx) in enumerate(KFold(n_folds, shuffle=False).split(ordered)):
        validation = ordered[(int(test_idx.max()) + 1) % len(ordered)]
        test = [ordered[i] for i in test_idx]
        train = [ordered[i] for i in train_idx if ordered[i] != validation]
        folds.append(Fold(index, test, validation, train))
    return folds


def shard_speaker(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    """C shards; shard j lacks class j; each class is dealt evenly over the shards that keep it."""
    shards: list[list[int]] = [[] for _ in range(num_classes)]
    for cls in range(num_classes):
        keepers = [j for j in range(num_classes) if j != cls]
        members = rng.permutation(np.flatnonzero(labels == cls))
        for position, row in enumerate(members):
            shards[keepers[position % len(keepers)]].append(int(row))
    return [np.sort(np.array(s, dtype=np.int64)) for s in shards]


def hide_labels(labels: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Keep a seeded `rate` share of each class's labels (at least one); the rest become UNLABELED."""
    kept = labels.copy()
    if rate >= 1.0:
        return kept
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_keep = max(1, int(round(rate * len(members))))
        kept[members[n_keep:]] = UNLABELED
    return kept


def make_shards(x: np.ndarray, y: np.ndarray, speaker: str, num_classes: int, eval_fraction: float,
                label_rate: float, seed: int) -> dict[str, ClientData]:
    rng = np.random.default_rng(stable_seed(seed, speaker, "shards"))
    out = {}
    for j, rows in enumerate(shard_speaker(y, num_classes, rng)):
        if len(rows) == 0:
            continue
        features, labels = zscore(x[rows]), y[rows]
        train, evals = split_train_eval(labels, eval_fraction, stable_seed(seed, speaker, j, "split"))
        truth = labels[train]
        shown = hide_labels(truth, label_rate, np.random.default_rng(stable_seed(seed, speaker, j, "labels")))
        hidden = np.where(shown == UNLABELED, truth, UNLABELED)
        out[f"{speaker}-{j}"] = ClientData(features[train], shown, features[evals], labels[evals], hidden)
    return out


def eval_set(speakers: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str]) -> ClientData:
    """Speakers pooled for evaluation, each z-scored with its own statistics."""
    x = np.concatenate([zscore(speakers[n][0]) for n in names])
    y = np.concatenate([speakers[n][1] for n in names])
    return ClientData(np.zeros((0, x.shape[1]), np.float32), np.zeros(0, np.int64), x, y)


def cell_config(base: RunConfig, cell: Cell, seed: int, rounds: int) -> RunConfig:
    overrides: dict[str, object] = {"federation.seed": seed, "federation.rounds": rounds}
    if cell.method == "centralized":
        # one client holding every shard; an epoch per round, as many passes over each sample as
        # a federated client makes on average (fraction x rounds)
        overrides.update({"federation.algorithm": "fedavg", "federation.fraction": 1.0, "federation.min_clients": 1,
                          "federation.rounds": max(1, math.ceil(base.federation.fraction * rounds))})
    else:
        overrides["federation.algorithm"] = "fedavg" if cell.method == "fedavg" else "scaffold"
    overrides["semi.enabled"] = cell.method == "semifedser"
    tree = base.model_dump()
    for dotted, value in overrides.items():
        section, field = dotted.split(".")
        tree[section][field] = value
    return RunConfig.model_validate(tree)


_SPEAKERS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _init_worker(speakers: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    import torch

    torch.set_num_threads(1)
    _SPEAKERS.update(speakers)


def run_cell(base_json: str, cell: Cell, fold: Fold, seed: int, rounds: int) -> dict[str, object]:
    """Train one (cell, fold, seed); return the record with the test UAR at the selected round."""
    started = time.perf_counter()
    base = RunConfig.from_json(base_json)
    config = cell_config(base, cell, seed, rounds)
    num_classes = config.num_classes
    shards: dict[str, ClientData] = {}
    for speaker in fold.train:
        x, y = _SPEAKERS[speaker]
        shards.update(make_shards(x, y, speaker, num_classes, config.train.eval_fraction, cell.label_rate, seed))
    if cell.method == "centralized":
        parts = list(shards.values())
        shards = {"pooled": ClientData(np.concatenate([p.x_train for p in parts]), np.concatenate([p.y_train for p in parts]),
                                       np.zeros((0, parts[0].x_train.shape[1]), np.float32), np.zeros(0, np.int64))}
    dim = next(iter(shards.values())).feature_dim
    validation = LocalTrainer(config, eval_set(_SPEAKERS, [fold.validation]), 0)
    test = LocalTrainer(config, eval_set(_SPEAKERS, fold.test), 0)
    clients = make_clients(config, shards)
    total = config.federation.rounds
    first_candidate = total - int(SELECT_FRACTION * total) + 1
    curve: list[tuple[int, float, float]] = []
    taken = correct = 0
    for result in federate(config, clients, dim):
        if result.tally.pseudo_taken is not None:
            taken += int(result.tally.pseudo_taken.sum())
            correct += int(result.tally.pseudo_correct.sum())
        if result.round >= first_candidate or result.round % CURVE_EVERY == 0:
            curve.append((result.round, uar(validation.evaluate(result.state)[0]), uar(test.evaluate(result.state)[0])))
    candidates = [c for c in curve if c[0] >= first_candidate]
    best = max(candidates, key=lambda c: (c[1], -c[0]))  # best validation UAR, earliest on ties
    return {"feature": config.features.name, "method": cell.method, "label_rate": cell.label_rate, "fold": fold.index,
            "seed": seed, "uar": best[2], "val_uar": best[1], "round": best[0], "rounds": total,
            "pseudo_taken": taken, "pseudo_correct": correct, "wall_s": round(time.perf_counter() - started, 2),
            "curve": curve}


def load_speakers(corpus: Path, feature: str, labels: LabelsConfig, workers: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    utterances, _ignored = read_manifest(corpus, labels)
    features = extract_corpus(corpus, [u.path for u in utterances], feature, default_cache_dir(corpus), workers)
    vectors, failed = features.vectors, features.failed
    by_speaker: dict[str, list] = defaultdict(list)
    for u in utterances:
        if u.path in vectors:
            by_speaker[u.speaker].append((vectors[u.path], u.label))
    if failed:
        print(f"skipped {len(failed)} unreadable files", file=sys.stderr)
    return {s: (np.stack([v for v, _ in rows]).astype(np.float32), np.array([lab for _, lab in rows], np.int64))
            for s, rows in sorted(by_speaker.items())}


def summarise(records: list[dict[str, object]], cells: list[Cell]) -> tuple[str, list[list[str]]]:
    rows = []
    for cell in cells:
        mine = [r for r in records if r["method"] == cell.method and r["label_rate"] == cell.label_rate]
        if not mine:
            continue
        scores = [float(r["uar"]) for r in mine]
        std = statistics.pstdev(scores) if len(scores) > 1 else 0.0
        pseudo = ""
        if cell.method == "semifedser":
            taken = sum(int(r["pseudo_taken"]) for r in mine)
            right = sum(int(r["pseudo_correct"]) for r in mine)
            pseudo = f"{taken / len(mine):.0f} taken/run, {100 * right / taken:.0f}% right" if taken else "0 taken"
        rows.append([cell.key, f"{100 * cell.label_rate:.0f}%", f"{100 * statistics.fmean(scores):.1f} ± {100 * std:.1f}",
                     f"{100 * statistics.fmean(float(r['val_uar']) for r in mine):.1f}",
                     f"{statistics.fmean(int(r['round']) for r in mine):.0f}", len(mine),
                     f"{statistics.fmean(float(r['wall_s']) for r in mine):.1f}", pseudo])
    header = ["method", "labels", "test UAR % (mean ± std)", "val UAR %", "chosen round", "runs", "wall s/run", "pseudo-labels"]
    return markdown_table(header, rows), rows


def plot_curves(records: list[dict[str, object]], cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for cell in cells:
        mine = [r["curve"] for r in records if r["method"] == cell.method and r["label_rate"] == cell.label_rate]
        if not mine:
            continue
        length = min(len(c) for c in mine)
        rounds = [c[0] for c in mine[0][:length]]
        if cell.method == "centralized":  # epochs, drawn on the federated round axis they stand for
            federated = max(int(r["rounds"]) for r in records)
            epochs = int(next(r["rounds"] for r in records if r["method"] == "centralized"))
            rounds = [r * federated / epochs for r in rounds]
        ax.plot(rounds, [100 * statistics.fmean(c[i][2] for c in mine) for i in range(length)], label=cell.key)
    ax.set_xlabel("round (centralized: epochs, rescaled)")
    ax.set_ylabel("test-speaker UAR % (mean over folds x seeds)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "nemo4")
    parser.add_argument("--feature", default="emobase")
    parser.add_argument("--quick", action="store_true", help="1 fold, 1 seed, 30 rounds: a smoke test")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--rounds", type=int, default=None, help=f"default {DEFAULT_ROUNDS} (30 with --quick)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", default=None, help="comma-separated fold indices to run (default all)")
    parser.add_argument("--seeds", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--cells", default=None, help="comma-separated, e.g. scaffold,semifedser@20 (default all seven)")
    parser.add_argument("--config", type=Path, default=None, help="a run-config TOML for the hyper-parameters")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set train.lr=0.1 (repeatable)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return parser.parse_args(argv)


def parse_cells(text: str | None) -> list[Cell]:
    if not text:
        return list(DEFAULT_CELLS)
    cells = []
    for item in text.split(","):
        method, _, rate = item.strip().partition("@")
        if method not in METHODS:
            raise ConfigError(f"--cells: unknown method '{method}' (one of {', '.join(METHODS)})")
        try:
            label_rate = float(rate) / 100 if rate else 1.0
        except ValueError:
            raise ConfigError(f"--cells: label rate '{rate}' is not a number") from None
        if not 0.0 < label_rate <= 1.0:
            raise ConfigError(f"--cells: label rate must be in (0, 100], got '{rate}'")
        cells.append(Cell(method, label_rate))
    return cells


def parse_overrides(items: list[str]) -> dict[str, object]:
    overrides: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set needs KEY=VALUE, got '{item}'")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rounds = args.rounds or (30 if args.quick else DEFAULT_ROUNDS)
    seeds = args.seeds or (1 if args.quick else 3)
    cells = parse_cells(args.cells)
    base = load_run_config(args.config, {"features.name": args.feature, **parse_overrides(args.set)})
    if not args.corpus.is_dir():
        raise DataError(f"corpus directory not found: {args.corpus}")
    started = time.perf_counter()
    speakers = load_speakers(args.corpus, args.feature, base.labels, args.workers)
    folds = speaker_folds(list(speakers), args.folds)
    if args.only_folds:
        wanted = {int(i) for i in args.only_folds.split(",")}
        folds = [f for f in folds if f.index in wanted]
    elif args.quick:
        folds = folds[:1]
    jobs = [(cell, fold, seed) for fold in folds for seed in range(seeds) for cell in cells]
    print(f"{len(jobs)} runs: {len(folds)} folds x {seeds} seeds x {len(cells)} cells, {rounds} rounds, "
          f"{args.workers} workers", flush=True)
    records: list[dict[str, object]] = []
    base_json = base.to_json()
    args.out.mkdir(parents=True, exist_ok=True)
    runs_log = args.out / "accuracy_runs.jsonl"  # every finished run with its curve, as it finishes
    runs_log.unlink(missing_ok=True)
    with ProcessPoolExecutor(max_workers=max(1, args.workers), initializer=_init_worker, initargs=(speakers,)) as pool:
        futures = [pool.submit(run_cell, base_json, cell, fold, seed, rounds) for cell, fold, seed in jobs]
        for (cell, fold, seed), future in zip(jobs, futures):
            record = future.result()
            records.append(record)
            with open(runs_log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            print(f"  fold {fold.index} seed {seed} {cell.key:14s} test UAR {100 * record['uar']:5.1f}  "
                  f"val {100 * record['val_uar']:5.1f} @ round {record['round']}  ({record['wall_s']:.0f} s)", flush=True)
    wall = time.perf_counter() - started
    table, _rows = summarise(records, cells)
    print()
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "accuracy.json").write_text(json.dumps(
        [{k: r[k] for k in ("feature", "method", "label_rate", "fold", "seed", "uar", "wall_s")} for r in records], indent=1))
    plot_curves(records, cells, args.out / "accuracy_curves.png")
    fold_lines = "\n".join(f"- fold {f.index}: test {', '.join(f.test)}; validation {f.validation}; "
                           f"{len(f.train)} training speakers -> {len(f.train) * base.num_classes} clients" for f in folds)
    body = (f"{len(folds)} folds x {seeds} seeds, {rounds} rounds (centralized: "
            f"{math.ceil(base.federation.fraction * rounds)} epochs), total wall time {wall / 60:.1f} min "
            f"with {args.workers} worker processes.\n\n{table}\n\n"
            "Test UAR pooled over each fold's test speakers, taken at the round with the best validation-speaker "
            "UAR in the last 40% of rounds; mean ± population std over folds x seeds. `val UAR` is that best "
            "validation score, `chosen round` its mean position. Pseudo-labels: taken per run and the share "
            "matching the hidden true label.\n\n"
            f"![UAR against rounds](accuracy_curves.png)\n\n## Folds\n\n{fold_lines}\n\n"
            "## Run configuration\n\nThe base configuration below; each cell then sets `federation.algorithm` "
            "(fedavg for fedavg and centralized, scaffold otherwise), `federation.rounds`, `federation.seed` and "
            "`semi.enabled` (semifedser only); centralized is one client holding every shard, fraction 1, "
            f"one epoch per round.\n\n```toml\n{_config_toml(base)}```\n")
    facts = machine_facts()
    path = write_results("accuracy", f"Accuracy on {args.corpus.name} ({args.feature})", _command(argv), facts, body, args.out)
    print(f"\nwrote {path}, {args.out / 'accuracy.json'}, {args.out / 'accuracy_curves.png'}")
    lead = next((c for c in cells if c.method == "semifedser"), cells[0])
    headline(f"{lead.key} test UAR %", 100 * statistics.fmean(
        float(r["uar"]) for r in records if r["method"] == lead.method and r["label_rate"] == lead.label_rate))


def _config_toml(config: RunConfig) -> str:
    from fedser_shared.config import to_toml

    return to_toml(config)


def _command(argv: list[str] | None) -> str:
    return " ".join(["python", "benchmarks/accuracy.py", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    try:
        main()
    except FedserError as exc:  # bad input: one line, no traceback
        print(f"accuracy.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
