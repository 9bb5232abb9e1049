"""Accuracy of centralized / FedAvg / SCAFFOLD / supervised SCAFFOLD / Semi-FedSER (MvPL, FixMatch) on a corpus (DESIGN §6).

    python benchmarks/accuracy.py [--corpus ../shared/data/nemo4] [--feature emobase] [--cells ...] [--quick] [--out DIR]

Protocol: speakers sorted, KFold(5, shuffle=False) over them; in each fold the next speakers after
the test speakers (cyclically; two when the corpus has enough) validate, never trained on; every
other training speaker becomes C shards (lack1: shard j lacks class j; 2class: shard j holds classes
j and j+1), each class split evenly over the shards that keep it. A label setting keeps an exact
seeded share of each shard's labels (5%, 10%, ...), or every label of K seeded training speakers and
none elsewhere (spkK). Training shards are z-scored by their speaker's statistics (or by their own,
--normalise shard); the validation and test speakers each by their own. The reported test UAR
(pooled over the test speakers) is taken at the round with the best validation UAR in the last 40%
of rounds; the last-round score and the mean over that window are reported beside it, and every
method is compared with its baseline pair by pair (same fold and seed) with a 95% CI. The federated
runs use the in-process engine, i.e. the same Strategy and LocalTrainer objects as the gRPC system.
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

from fedser_client.core.data import UNLABELED, ClientData, zscore  # noqa: E402
from fedser_client.core.trainer import LocalTrainer, stable_seed  # noqa: E402
from fedser_shared.config import LabelsConfig, RunConfig, load_run_config  # noqa: E402
from fedser_shared.errors import ConfigError, DataError, FedserError  # noqa: E402
from fedser_shared.metrics import uar  # noqa: E402
from fedser_sim.corpus import read_manifest  # noqa: E402
from fedser_sim.features import default_cache_dir, extract_corpus  # noqa: E402
from fedser_sim.inprocess_engine import federate, make_clients  # noqa: E402
from fedser_sim.labels import hide_labels, labeled_speakers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("centralized", "fedavg", "scaffold", "supervised", "mvpl", "fixmatch")
ALIASES = {"semifedser": "mvpl"}   # the paper's Semi-FedSER is SCAFFOLD + MvPL
SEMI_METHODS = ("mvpl", "fixmatch")
PARTITIONS = ("lack1", "2class")  # shard j lacks class j / shard j holds classes j and j+1
SELECT_FRACTION = 0.4   # the reported round is chosen in the last 40% of rounds
DEFAULT_ROUNDS = 100    # see benchmarks/results/accuracy.md: validation UAR stops rising near round 100
CURVE_EVERY = 5         # before that window, evaluate every 5th round (for the plot only)


@dataclass(frozen=True)
class Labels:
    """Which training rows keep their label: a share of every shard, or K whole speakers."""

    rate: float = 1.0
    speakers: int = 0

    @property
    def key(self) -> str:
        if self.speakers:
            return f"spk{self.speakers}"
        return "" if self.rate == 1.0 else f"{round(self.rate * 100)}"

    @property
    def nominal(self) -> str:
        return f"{self.speakers} labeled speakers" if self.speakers else f"{100 * self.rate:.0f}%"


@dataclass(frozen=True)
class Cell:
    """One table cell: a method, a label setting and a partition."""

    method: str
    labels: Labels = Labels()
    partition: str = "lack1"

    @property
    def key(self) -> str:
        labels = f"@{self.labels.key}" if self.labels.key else ""
        partition = f"~{self.partition}" if self.partition != "lack1" else ""
        return f"{self.method}{labels}{partition}"

    @property
    def baseline(self) -> Cell | None:
        """The cell this one is compared with, pair by pair (same fold and seed)."""
        if self.method in SEMI_METHODS:
            return Cell("supervised", self.labels, self.partition)
        if self.method == "scaffold":
            return Cell("fedavg", self.labels, self.partition)
        return None


DEFAULT_CELLS = tuple(Cell(m, labels, p) for m, labels, p in (
    ("centralized", Labels(), "lack1"), ("fedavg", Labels(), "lack1"), ("scaffold", Labels(), "lack1"),
    ("fedavg", Labels(), "2class"), ("scaffold", Labels(), "2class"),
    *((m, Labels(speakers=2), "lack1") for m in ("supervised", "mvpl", "fixmatch")),
    *((m, Labels(0.1), "lack1") for m in ("supervised", "mvpl", "fixmatch")),
))


@dataclass(frozen=True)
class Fold:
    index: int
    test: list[str]
    validation: list[str]
    train: list[str]


def speaker_folds(speakers: list[str], n_folds: int, n_validation: int | None = None) -> list[Fold]:
    """KFold(n_folds, shuffle=False) over sorted speakers, plus the validation speakers: the next ones
    after the test speakers, cyclically; two when at least four training speakers remain, else one."""
    from sklearn.model_selection import KFold

    ordered = sorted(speakers)
    if len(ordered) < n_folds + 2:
        raise DataError(f"{len(ordered)} speakers cannot make {n_folds} folds with a validation and a training speaker")
    largest_test = -(-len(ordered) // n_folds)
    if n_validation is None:
        n_validation = 2 if len(ordered) - largest_test - 2 >= 4 else 1
    folds = []
    for index, (train_idx, test_idx) in enumerate(KFold(n_folds, shuffle=False).split(ordered)):
        validation = [ordered[(int(test_idx.max()) + 1 + k) % len(ordered)] for k in range(n_validation)]
        test = [ordered[i] for i in test_idx]
        train = [ordered[i] for i in train_idx if ordered[i] not in validation]
        folds.append(Fold(index, test, validation, train))
    return folds


def shard_speaker(labels: np.ndarray, num_classes: int, rng: np.random.Generator, partition: str = "lack1") -> list[np.ndarray]:
    """C shards. lack1: shard j lacks class j. 2class: shard j holds classes j and j+1 (mod C).
    Each class is dealt evenly over the shards that keep it."""
    shards: list[list[int]] = [[] for _ in range(num_classes)]
    for cls in range(num_classes):
        if partition == "2class":
            keepers = [cls, (cls - 1) % num_classes]
        else:
            keepers = [j for j in range(num_classes) if j != cls]
        members = rng.permutation(np.flatnonzero(labels == cls))
        for position, row in enumerate(members):
            shards[keepers[position % len(keepers)]].append(int(row))
    return [np.sort(np.array(s, dtype=np.int64)) for s in shards]


def make_shards(x: np.ndarray, y: np.ndarray, speaker: str, num_classes: int, labels: Labels, keeps_labels: bool,
                seed: int, partition: str = "lack1", normalise: str = "speaker") -> dict[str, ClientData]:
    """A training speaker's shards, all rows training rows (the benchmark scores on held-out speakers, so no
    local evaluation split is set aside). normalise: z-score with the speaker's statistics, or each shard's."""
    rng = np.random.default_rng(stable_seed(seed, speaker, "shards"))
    features_all = zscore(x) if normalise == "speaker" else x
    out = {}
    for j, rows in enumerate(shard_speaker(y, num_classes, rng, partition)):
        if len(rows) == 0:
            continue
        features = features_all[rows] if normalise == "speaker" else zscore(x[rows])
        truth = y[rows]
        if labels.speakers:
            shown = truth.copy() if keeps_labels else np.full(len(rows), UNLABELED, np.int64)
        else:
            shown = hide_labels(truth, labels.rate, np.random.default_rng(stable_seed(seed, speaker, j, "labels")))
        hidden = np.where(shown == UNLABELED, truth, UNLABELED)
        empty = np.zeros((0, x.shape[1]), np.float32)
        out[f"{speaker}-{j}"] = ClientData(features, shown, empty, np.zeros(0, np.int64), hidden)
    return out


def eval_set(speakers: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str]) -> ClientData:
    """Speakers pooled for evaluation, each z-scored with its own statistics."""
    x = np.concatenate([zscore(speakers[n][0]) for n in names])
    y = np.concatenate([speakers[n][1] for n in names])
    return ClientData(np.zeros((0, x.shape[1]), np.float32), np.zeros(0, np.int64), x, y)


def cell_config(base: RunConfig, cell: Cell, seed: int, rounds: int) -> RunConfig:
    overrides: dict[str, object] = {"federation.seed": seed, "federation.rounds": rounds, "train.eval_fraction": 0.0}
    if cell.method == "centralized":
        # one client holding every shard; an epoch per round, as many passes over each sample as
        # a federated client makes on average (fraction x rounds), and the same learning-rate schedule
        fraction = base.federation.fraction
        overrides.update({"federation.algorithm": "fedavg", "federation.fraction": 1.0, "federation.min_clients": 1,
                          "federation.rounds": max(1, math.ceil(fraction * rounds)),
                          "train.lr_decay_every": max(1, round(fraction * base.train.lr_decay_every))})
    else:
        overrides["federation.algorithm"] = "fedavg" if cell.method == "fedavg" else "scaffold"
    overrides["semi.enabled"] = cell.method in SEMI_METHODS
    if cell.method in SEMI_METHODS:
        overrides["semi.method"] = cell.method
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


def run_cell(base_json: str, cell: Cell, fold: Fold, seed: int, rounds: int, normalise: str = "speaker") -> dict[str, object]:
    """Train one (cell, fold, seed); return the record with the test UAR at the selected round."""
    started = time.perf_counter()
    base = RunConfig.from_json(base_json)
    config = cell_config(base, cell, seed, rounds)
    num_classes = config.num_classes
    keeping = labeled_speakers(fold.train, cell.labels.speakers, np.random.default_rng(stable_seed(seed, "speakers"))) \
        if cell.labels.speakers else set(fold.train)
    shards: dict[str, ClientData] = {}
    for speaker in fold.train:
        x, y = _SPEAKERS[speaker]
        shards.update(make_shards(x, y, speaker, num_classes, cell.labels, speaker in keeping, seed, cell.partition, normalise))
    n_rows = sum(len(s.y_train) for s in shards.values())
    n_labeled = sum(len(s.labeled_index) for s in shards.values())
    if cell.method == "centralized":
        parts = list(shards.values())
        shards = {"pooled": ClientData(np.concatenate([p.x_train for p in parts]), np.concatenate([p.y_train for p in parts]),
                                       np.zeros((0, parts[0].x_train.shape[1]), np.float32), np.zeros(0, np.int64))}
    dim = next(iter(shards.values())).feature_dim
    validation = LocalTrainer(config, eval_set(_SPEAKERS, fold.validation), 0)
    test = LocalTrainer(config, eval_set(_SPEAKERS, fold.test), 0)
    clients = make_clients(config, shards)
    total = config.federation.rounds
    first_candidate = total - max(1, int(SELECT_FRACTION * total)) + 1
    curve: list[tuple[int, float, float]] = []
    pseudo = dict.fromkeys(("taken", "correct", "candidates", "pass_tau", "pass_kappa", "empty_updates"), 0)
    for result in federate(config, clients, dim):
        tally = result.tally
        if tally.pseudo_taken is not None:
            pseudo["taken"] += int(tally.pseudo_taken.sum())
            pseudo["correct"] += int(tally.pseudo_correct.sum())
        pseudo["candidates"] += tally.pseudo_candidates
        pseudo["pass_tau"] += tally.pseudo_pass_tau
        pseudo["pass_kappa"] += tally.pseudo_pass_kappa
        pseudo["empty_updates"] += tally.n_empty
        if result.round >= first_candidate or result.round % CURVE_EVERY == 0:
            curve.append((result.round, uar(validation.evaluate(result.state)[0]), uar(test.evaluate(result.state)[0])))
    window = [c for c in curve if c[0] >= first_candidate]
    best = max(window, key=lambda c: (c[1], -c[0]))  # best validation UAR, earliest on ties
    return {"feature": config.features.name, "method": cell.method, "cell": cell.key, "label_rate": cell.labels.rate,
            "labeled_speakers": cell.labels.speakers, "partition": cell.partition, "normalise": normalise,
            "fold": fold.index, "seed": seed, "uar": best[2], "uar_last": window[-1][2],
            "uar_window_mean": statistics.fmean(c[2] for c in window), "val_uar": best[1],
            "val_window_mean": statistics.fmean(c[1] for c in window), "round": best[0],
            "rounds": total, "labeled_share": n_labeled / max(n_rows, 1), "wall_s": round(time.perf_counter() - started, 2),
            **{f"pseudo_{k}": v for k, v in pseudo.items()}, "curve": curve}


def load_speakers(corpus: Path, feature: str, labels: LabelsConfig, workers: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    utterances, ignored = read_manifest(corpus, labels)
    if ignored:
        listed = ", ".join(f"{emotion or '(empty)'} {n}" for emotion, n in sorted(ignored.items()))
        print(f"ignored {sum(ignored.values())} clips whose emotion the label map does not name: {listed}", file=sys.stderr)
    if not utterances:
        raise DataError(f"no clip in {corpus / 'manifest.csv'} has an emotion the label map names "
                        f"({', '.join(sorted(labels.emotion_map))})")
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


def _mine(records: list[dict[str, object]], cell: Cell) -> list[dict[str, object]]:
    return [r for r in records if r["cell"] == cell.key]


def _pm(values: list[float]) -> str:
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.1f} ± {100 * std:.1f}"


def summarise(records: list[dict[str, object]], cells: list[Cell]) -> tuple[str, list[list[str]]]:
    rows = []
    for cell in cells:
        mine = _mine(records, cell)
        if not mine:
            continue
        pseudo = tau = kappa = ""
        if cell.method in SEMI_METHODS:
            taken = sum(int(r["pseudo_taken"]) for r in mine)
            right = sum(int(r["pseudo_correct"]) for r in mine)
            pseudo = f"{taken / len(mine):.0f} taken/run, {100 * right / taken:.0f}% right" if taken else "0 taken"
            candidates = sum(int(r["pseudo_candidates"]) for r in mine)
            if candidates:
                tau = f"{100 * sum(int(r['pseudo_pass_tau']) for r in mine) / candidates:.1f}%"
                if cell.method == "mvpl":
                    kappa = f"{100 * sum(int(r['pseudo_pass_kappa']) for r in mine) / candidates:.2f}%"
        rows.append([cell.key, cell.partition, cell.labels.nominal,
                     f"{100 * statistics.fmean(float(r['labeled_share']) for r in mine):.1f}%",
                     _pm([float(r["uar"]) for r in mine]), _pm([float(r["uar_last"]) for r in mine]),
                     _pm([float(r["uar_window_mean"]) for r in mine]),
                     f"{100 * statistics.fmean(float(r['val_uar']) for r in mine):.1f}",
                     f"{statistics.fmean(int(r['round']) for r in mine):.0f}", len(mine),
                     f"{statistics.fmean(float(r['wall_s']) for r in mine):.1f}", pseudo, tau, kappa])
    header = ["cell", "partition", "labels", "labeled rows", "test UAR % at selected round", "at last round",
              "window mean", "val UAR %", "chosen round", "runs", "wall s/run", "pseudo-labels", "τ pass", "κ pass"]
    return markdown_table(header, rows), rows


def paired_difference(differences: list[float]) -> tuple[float, float, float]:
    """Mean and 95% confidence interval (Student t) of paired differences."""
    from scipy import stats

    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences) / math.sqrt(len(differences))
    return mean, mean - half, mean + half


def paired_table(records: list[dict[str, object]], cells: list[Cell]) -> tuple[str, list[dict[str, object]]]:
    """Each cell against its baseline on the same fold and seed."""
    rows, found = [], []
    for cell in cells:
        base = cell.baseline
        if base is None:
            continue
        ours = {(r["fold"], r["seed"]): r for r in _mine(records, cell)}
        theirs = {(r["fold"], r["seed"]): r for r in _mine(records, base)}
        pairs = sorted(set(ours) & set(theirs))
        if not pairs:
            continue
        line: dict[str, object] = {"cell": cell.key, "baseline": base.key, "pairs": len(pairs)}
        cols = [cell.key, base.key]
        for score in ("uar", "uar_last", "uar_window_mean"):
            diffs = [100 * (float(ours[k][score]) - float(theirs[k][score])) for k in pairs]
            mean, low, high = paired_difference(diffs)
            line[score] = {"mean": mean, "ci95": [low, high], "positive": sum(d > 0 for d in diffs)}
            cols.append(f"{mean:+.1f} [{low:+.1f}, {high:+.1f}]")
            if score == "uar":
                cols.append(f"{sum(d > 0 for d in diffs)}/{len(pairs)}")
        rows.append(cols)
        found.append(line)
    header = ["cell", "baseline", "Δ selected round, points [95% CI]", "pairs up", "Δ last round", "Δ window mean"]
    return markdown_table(header, rows), found


def plot_curves(records: list[dict[str, object]], cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab20").colors
    for position, cell in enumerate(cells):
        mine = [r["curve"] for r in _mine(records, cell)]
        if not mine:
            continue
        length = min(len(c) for c in mine)
        rounds = [c[0] for c in mine[0][:length]]
        if cell.method == "centralized":  # epochs, drawn on the federated round axis they stand for
            federated = max(int(r["rounds"]) for r in records)
            epochs = int(next(r["rounds"] for r in records if r["method"] == "centralized"))
            rounds = [r * federated / epochs for r in rounds]
        style = "--" if cell.method in SEMI_METHODS else ":" if cell.method == "centralized" else "-"
        ax.plot(rounds, [100 * statistics.fmean(c[i][2] for c in mine) for i in range(length)], label=cell.key,
                color=colours[(2 * position) % 20 + (2 * position) // 20 % 2], linestyle=style)
    ax.set_xlabel("round (centralized: epochs, rescaled)")
    ax.set_ylabel("test-speaker UAR % (mean over folds x seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "nemo4")
    parser.add_argument("--feature", default="emobase", help="emobase | egemaps | compare | apc | tera | decoar2 | distilhubert")
    parser.add_argument("--quick", action="store_true", help="1 fold, 1 seed, 30 rounds: a smoke test")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--rounds", type=int, default=None, help=f"default {DEFAULT_ROUNDS} (30 with --quick)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-folds", default=None, help="comma-separated fold indices to run (default all)")
    parser.add_argument("--seeds", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--cells", default=None,
                        help="comma-separated METHOD[@LABELS][~PARTITION]: METHOD one of " + ", ".join(METHODS)
                             + " (semifedser = mvpl); LABELS a percentage (5, 10, 20, 40; default 100) or spkK "
                             "(K training speakers keep every label, the others none); PARTITION lack1 (default) or "
                             "2class, e.g. scaffold~2class,fixmatch@spk2,mvpl@10 (default: the committed table's cells)")
    parser.add_argument("--normalise", choices=("speaker", "shard"), default="speaker",
                        help="z-score each training shard with its speaker's statistics (a device is one speaker) "
                             "or with the shard's own")
    parser.add_argument("--validation-speakers", type=int, default=None,
                        help="validation speakers per fold (default 2 when 4 training speakers remain, else 1)")
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
        head, _, partition = item.strip().partition("~")
        method, _, rate = head.partition("@")
        method = ALIASES.get(method, method)
        if method not in METHODS:
            raise ConfigError(f"--cells: unknown method '{method}' (one of {', '.join(METHODS)})")
        partition = partition or "lack1"
        if partition not in PARTITIONS:
            raise ConfigError(f"--cells: unknown partition '{partition}' (one of {', '.join(PARTITIONS)})")
        if rate.startswith("spk"):
            if not rate[3:].isdigit() or int(rate[3:]) < 1:
                raise ConfigError(f"--cells: '{rate}' needs a positive number of labeled speakers, e.g. spk2")
            labels = Labels(speakers=int(rate[3:]))
        else:
            try:
                label_rate = float(rate) / 100 if rate else 1.0
            except ValueError:
                raise ConfigError(f"--cells: label rate '{rate}' is not a number") from None
            if not 0.0 < label_rate <= 1.0:
                raise ConfigError(f"--cells: label rate must be in (0, 100], got '{rate}'")
            labels = Labels(label_rate)
        if method == "centralized" and (labels != Labels() or partition != "lack1"):
            raise ConfigError("--cells: centralized pools every label; it takes no label setting or partition")
        cells.append(Cell(method, labels, partition))
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
    facts = machine_facts()  # at the start: the commit that runs and the load it starts under
    speakers = load_speakers(args.corpus, args.feature, base.labels, args.workers)
    folds = speaker_folds(list(speakers), args.folds, args.validation_speakers)
    most_labeled = max((c.labels.speakers for c in cells), default=0)
    if most_labeled and most_labeled >= min(len(f.train) for f in folds):
        raise ConfigError(f"--cells: spk{most_labeled} leaves no unlabeled speaker in a fold with "
                          f"{min(len(f.train) for f in folds)} training speakers")
    if args.only_folds:
        wanted = {int(i) for i in args.only_folds.split(",")}
        folds = [f for f in folds if f.index in wanted]
    elif args.quick:
        folds = folds[:1]
    jobs = [(cell, fold, seed) for fold in folds for seed in range(seeds) for cell in cells]
    print(f"{len(jobs)} runs: {len(folds)} folds x {seeds} seeds x {len(cells)} cells, {rounds} rounds, "
          f"{args.workers} workers, normalised by {args.normalise}", flush=True)
    records: list[dict[str, object]] = []
    base_json = base.to_json()
    args.out.mkdir(parents=True, exist_ok=True)
    runs_log = args.out / "accuracy_runs.jsonl"  # every finished run with its curve, as it finishes
    runs_log.unlink(missing_ok=True)
    with ProcessPoolExecutor(max_workers=max(1, args.workers), initializer=_init_worker, initargs=(speakers,)) as pool:
        futures = [pool.submit(run_cell, base_json, cell, fold, seed, rounds, args.normalise) for cell, fold, seed in jobs]
        for (cell, fold, seed), future in zip(jobs, futures):
            record = future.result()
            records.append(record)
            with open(runs_log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            print(f"  fold {fold.index} seed {seed} {cell.key:20s} test UAR {100 * record['uar']:5.1f}  "
                  f"val {100 * record['val_uar']:5.1f} @ round {record['round']}  ({record['wall_s']:.0f} s)", flush=True)
    wall = time.perf_counter() - started
    table, _rows = summarise(records, cells)
    paired, paired_rows = paired_table(records, cells)
    print()
    print(table)
    print()
    print(paired)
    (args.out / "accuracy.json").write_text(json.dumps({
        "runs": [{k: v for k, v in r.items() if k != "curve"} for r in records], "paired": paired_rows}, indent=1))
    plot_curves(records, cells, args.out / "accuracy_curves.png")
    fold_lines = "\n".join(f"- fold {f.index}: test {', '.join(f.test)}; validation {', '.join(f.validation)}; "
                           f"{len(f.train)} training speakers -> {len(f.train) * base.num_classes} clients" for f in folds)
    body = (f"{len(folds)} folds x {seeds} seeds, {rounds} rounds (centralized: "
            f"{math.ceil(base.federation.fraction * rounds)} epochs), total wall time {wall / 60:.1f} min "
            f"with {args.workers} worker processes; training shards z-scored by {args.normalise}.\n\n{table}\n\n"
            "Test UAR pooled over each fold's test speakers: at the round with the best validation-speaker UAR in the "
            "last 40% of rounds (selected), at the last round, and the mean over those last 40%; mean ± population "
            "std over folds x seeds. `labeled rows` is the share of training rows that kept their label. "
            "Pseudo-labels: taken per run and the share matching the hidden true label (FixMatch: distinct unlabeled "
            "rows that passed the threshold in some step). τ pass: share of examined unlabeled predictions that "
            "reached the confidence threshold; κ pass (MvPL): share that also had view uncertainty ≤ κ.\n\n"
            f"## Paired differences (same fold and seed)\n\n{paired}\n\n"
            "Each difference is a cell's test UAR minus its baseline's on the same fold and seed (semi-supervised "
            "methods against `supervised` with the same labels, SCAFFOLD against FedAvg on the same partition); "
            "mean with a 95% Student-t confidence interval, and how many pairs went up.\n\n"
            f"![UAR against rounds](accuracy_curves.png)\n\n## Folds\n\n{fold_lines}\n\n"
            "## Run configuration\n\nThe base configuration below; each cell then sets `federation.algorithm` "
            "(fedavg for fedavg and centralized, scaffold otherwise), `federation.rounds`, `federation.seed`, "
            "`train.eval_fraction = 0` (scores come from held-out speakers), `semi.enabled` and `semi.method` (mvpl, "
            "fixmatch); centralized is one client holding every shard, fraction 1, one epoch per round, its learning "
            f"rate decayed after the same share of training.\n\n```toml\n{_config_toml(base)}```\n")
    path = write_results("accuracy", f"Accuracy on {args.corpus.name} ({args.feature})", _command(argv), facts, body, args.out)
    print(f"\nwrote {path}, {args.out / 'accuracy.json'}, {args.out / 'accuracy_curves.png'}")
    lead = next((c for c in cells if c.method in SEMI_METHODS), cells[0])
    headline(f"{lead.key} test UAR %", 100 * statistics.fmean(float(r["uar"]) for r in _mine(records, lead)))


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
