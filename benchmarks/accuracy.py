"""Accuracy of centralized / FedAvg / SCAFFOLD / supervised SCAFFOLD / Semi-FedSER (MvPL, FixMatch) on a corpus (DESIGN §6).

    python benchmarks/accuracy.py [--corpus ../shared/data/nemo4] [--feature emobase] [--cells ...] [--views ...]
                                  [--quick] [--out DIR]

Protocol: speakers sorted, KFold(5, shuffle=False) over them; in each fold the next speakers after
the test speakers (cyclically; two when the corpus has enough) validate, never trained on; every
other training speaker becomes C shards (lack1: shard j lacks class j; 2class: shard j holds classes
j and j+1), each class split evenly over the shards that keep it. A label setting keeps an exact
seeded share of each shard's labels (5%, 10%, ...), or every label of K seeded training speakers and
none elsewhere (spkK). Training shards are z-scored by their speaker's statistics (or by their own,
--normalise shard); the validation and test speakers each by their own. The reported test UAR
(pooled over the test speakers) is taken at the round with the best validation UAR in the last 40%
of rounds; the last-round score and the mean over that window are reported beside it, and every
method is compared with its baseline pair by pair (same fold and seed) with a fold-clustered 95% CI
(mean over seeds per fold, Student t over folds) and the CI over pairs beside it. `supervised` is the
semi methods' fair baseline (same weak views, client sampling and local steps, no unlabeled term);
`supervised-noaug` the plain one. Choices among strong views or methods (`+nested` rows) are made per
fold on that fold's validation speakers only. The federated runs use the in-process engine, i.e. the
same Strategy and LocalTrainer objects as the gRPC system.
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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import headline, machine_facts, markdown_table, write_results  # noqa: E402

from fedser_client.core.augment import style_bank  # noqa: E402
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
METHODS = ("centralized", "fedavg", "scaffold", "supervised", "supervised-noaug", "mvpl", "fixmatch")
ALIASES = {"semifedser": "mvpl"}   # the paper's Semi-FedSER is SCAFFOLD + MvPL
SEMI_METHODS = ("mvpl", "fixmatch")
# `semi.method` of the cells that run the semi-supervised pipeline: the same weak views of the labels, the same
# client sampling (label-free clients sampled, sending empty updates when they have nothing) and the same steps
PIPELINE = {"supervised": "supervised", "mvpl": "mvpl", "fixmatch": "fixmatch"}
# strong-view options (DESIGN §5) a semi cell can run with, each fixed before any run; "sfa" is SFA alone
VIEWS: dict[str, dict[str, object]] = {"sfa": {}, "mixup": {"semi.strong_mixup": 0.3}, "mask": {"semi.strong_mask": 0.2},
                                       "style": {"semi.strong_style": True}}
NESTED = "nested"
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

    method: str             # one of METHODS, or "semi" for the nested choice among every semi cell of a setting
    labels: Labels = Labels()
    partition: str = "lack1"
    view: str = "sfa"       # a semi cell's strong view (VIEWS), or NESTED: chosen per fold on validation speakers

    @property
    def key(self) -> str:
        labels = f"@{self.labels.key}" if self.labels.key else ""
        partition = f"~{self.partition}" if self.partition != "lack1" else ""
        view = f"+{self.view}" if self.view != "sfa" else ""
        return f"{self.method}{labels}{partition}{view}"

    @property
    def baseline(self) -> Cell | None:
        """The cell this one is compared with, pair by pair (same fold and seed)."""
        if self.method in (*SEMI_METHODS, "semi"):
            return Cell("supervised", self.labels, self.partition)
        if self.method == "supervised":
            return Cell("supervised-noaug", self.labels, self.partition)
        if self.method == "scaffold":
            return Cell("fedavg", self.labels, self.partition)
        return None


DEFAULT_CELLS = tuple(Cell(m, labels, p) for m, labels, p in (
    ("centralized", Labels(), "lack1"), ("fedavg", Labels(), "lack1"), ("scaffold", Labels(), "lack1"),
    ("fedavg", Labels(), "2class"), ("scaffold", Labels(), "2class"),
    *((m, Labels(speakers=2), "lack1") for m in ("supervised-noaug", "supervised", "mvpl", "fixmatch")),
    *((m, Labels(0.1), "lack1") for m in ("supervised-noaug", "supervised", "mvpl", "fixmatch")),
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
                seed: int, partition: str = "lack1", normalise: str = "speaker",
                other_speakers: list[tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, ClientData]:
    """A training speaker's shards, all rows training rows (the benchmark scores on held-out speakers, so no
    local evaluation split is set aside). normalise: z-score with the speaker's statistics, or each shard's.
    other_speakers: (mean, std) of the other training speakers, for the speaker-style strong view."""
    rng = np.random.default_rng(stable_seed(seed, speaker, "shards"))
    features_all = zscore(x) if normalise == "speaker" else x
    out = {}
    for j, rows in enumerate(shard_speaker(y, num_classes, rng, partition)):
        if len(rows) == 0:
            continue
        features = features_all[rows] if normalise == "speaker" else zscore(x[rows])
        own = x if normalise == "speaker" else x[rows]
        bank = None if other_speakers is None else style_bank(
            (own.mean(axis=0, dtype=np.float64), own.std(axis=0, dtype=np.float64)), other_speakers)
        truth = y[rows]
        if labels.speakers:
            shown = truth.copy() if keeps_labels else np.full(len(rows), UNLABELED, np.int64)
        else:
            shown = hide_labels(truth, labels.rate, np.random.default_rng(stable_seed(seed, speaker, j, "labels")))
        hidden = np.where(shown == UNLABELED, truth, UNLABELED)
        empty = np.zeros((0, x.shape[1]), np.float32)
        out[f"{speaker}-{j}"] = ClientData(features, shown, empty, np.zeros(0, np.int64), hidden, bank)
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
    overrides["semi.enabled"] = cell.method in PIPELINE
    if cell.method in PIPELINE:
        overrides["semi.method"] = PIPELINE[cell.method]
    if cell.method in SEMI_METHODS:
        overrides.update(VIEWS[cell.view])
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
    stats = {s: (_SPEAKERS[s][0].mean(axis=0, dtype=np.float64), _SPEAKERS[s][0].std(axis=0, dtype=np.float64))
             for s in fold.train} if config.semi.enabled and config.semi.strong_style else None
    shards: dict[str, ClientData] = {}
    owner: dict[str, str] = {}
    for speaker in fold.train:
        x, y = _SPEAKERS[speaker]
        others = None if stats is None else [v for s, v in stats.items() if s != speaker]
        mine = make_shards(x, y, speaker, num_classes, cell.labels, speaker in keeping, seed, cell.partition, normalise, others)
        shards.update(mine)
        owner.update(dict.fromkeys(mine, speaker))
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
    pseudo = dict.fromkeys(("uses", "candidates", "pass_tau", "pass_kappa", "empty_updates"), 0)
    taken: dict[str, dict[int, int]] = defaultdict(dict)  # client -> row -> the last pseudo-label it trained with
    refused: dict[str, int] = defaultdict(int)  # e.g. norm_bound: an honest update refused changes what a cell measures
    for result in federate(config, clients, dim):
        tally = result.tally
        for reason, count in tally.refused.items():
            refused[reason] += count
        for name, report in result.reports.items():
            pseudo["uses"] += len(report.pseudo_rows)
            taken[name].update(zip(report.pseudo_rows.tolist(), report.pseudo_labels.tolist()))
        pseudo["candidates"] += tally.pseudo_candidates
        pseudo["pass_tau"] += tally.pseudo_pass_tau
        pseudo["pass_kappa"] += tally.pseudo_pass_kappa
        pseudo["empty_updates"] += tally.n_empty
        if result.round >= first_candidate or result.round % CURVE_EVERY == 0:
            curve.append((result.round, uar(validation.evaluate(result.state)[0]), uar(test.evaluate(result.state)[0])))
    window = [c for c in curve if c[0] >= first_candidate]
    best = max(window, key=lambda c: (c[1], -c[0]))  # best validation UAR, earliest on ties
    precision = pseudo_precision(taken, shards, owner, keeping, num_classes) if cell.method != "centralized" else {}
    return {"feature": config.features.name, "method": cell.method, "cell": cell.key, "label_rate": cell.labels.rate,
            "labeled_speakers": cell.labels.speakers, "partition": cell.partition, "normalise": normalise,
            "fold": fold.index, "seed": seed, "uar": best[2], "uar_last": window[-1][2],
            "uar_window_mean": statistics.fmean(c[2] for c in window), "val_uar": best[1],
            "val_window_mean": statistics.fmean(c[1] for c in window), "round": best[0],
            "rounds": total, "labeled_share": n_labeled / max(n_rows, 1), "wall_s": round(time.perf_counter() - started, 2),
            **{f"pseudo_{k}": v for k, v in pseudo.items()}, **precision, "refused": dict(refused), "curve": curve}


def pseudo_precision(taken: dict[str, dict[int, int]], shards: dict[str, ClientData], owner: dict[str, str],
                     keeping: set[str], num_classes: int) -> dict[str, object]:
    """Distinct (client, row) pairs that trained with a pseudo-label, each with the last label it got, against the
    hidden truth: in all, per assigned class, and per training speaker (and whether that speaker kept labels)."""
    per_class = np.zeros((2, num_classes), np.int64)                 # taken, right
    per_speaker: dict[str, list[object]] = {}
    for name, rows in taken.items():
        if not rows:
            continue
        index = np.fromiter(rows, np.int64, len(rows))
        label = np.fromiter(rows.values(), np.int64, len(rows))
        right = shards[name].hidden_labels[index] == label
        per_class[0] += np.bincount(label, minlength=num_classes)
        per_class[1] += np.bincount(label[right], minlength=num_classes)
        entry = per_speaker.setdefault(owner[name], [0, 0, owner[name] in keeping])
        entry[0] = int(entry[0]) + len(index)  # type: ignore[call-overload]
        entry[1] = int(entry[1]) + int(right.sum())  # type: ignore[call-overload]
    return {"pseudo_taken": int(per_class[0].sum()), "pseudo_correct": int(per_class[1].sum()),
            "pseudo_class_taken": per_class[0].tolist(), "pseudo_class_correct": per_class[1].tolist(),
            "pseudo_speakers": per_speaker}


def reusable_runs(path: Path | None, feature: str) -> dict[tuple[str, int, int], dict[str, object]]:
    if path is None:
        return {}
    if not path.is_file():
        raise DataError(f"--reuse: no such file: {path}")
    runs = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
            key = (str(record["cell"]), int(record["fold"]), int(record["seed"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise DataError(f"--reuse: {path} line {number} is not a run record") from None
        if record.get("feature") == feature:
            runs[key] = record
    return runs


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
        if cell.method in (*SEMI_METHODS, "semi"):
            taken = sum(int(r["pseudo_taken"]) for r in mine)
            right = sum(int(r["pseudo_correct"]) for r in mine)
            uses = sum(int(r["pseudo_uses"]) for r in mine)
            pseudo = (f"{taken / len(mine):.0f} rows/run ({uses / len(mine):.0f} uses), {100 * right / taken:.0f}% right"
                      if taken else "0 taken")
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


def fold_clustered_difference(differences: dict[int, list[float]]) -> tuple[float, float, float]:
    """Mean and 95% CI with the fold as the unit: the seeds of a fold share its test speakers, so their pairs
    are not independent. Mean over seeds per fold, then Student t over the folds."""
    return paired_difference([statistics.fmean(d) for _, d in sorted(differences.items())])


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
        line: dict[str, object] = {"cell": cell.key, "baseline": base.key, "pairs": len(pairs),
                                   "folds": len({fold for fold, _ in pairs})}
        cols = [cell.key, base.key]
        for score in ("uar", "uar_last", "uar_window_mean"):
            diffs = [100 * (float(ours[k][score]) - float(theirs[k][score])) for k in pairs]
            by_fold: dict[int, list[float]] = defaultdict(list)
            for (fold, _), d in zip(pairs, diffs):
                by_fold[int(fold)].append(d)  # type: ignore[call-overload]
            mean, low, high = paired_difference(diffs)
            _, fold_low, fold_high = fold_clustered_difference(by_fold)
            line[score] = {"mean": mean, "ci95": [low, high], "ci95_fold": [fold_low, fold_high],
                           "positive": sum(d > 0 for d in diffs)}
            if score == "uar":
                cols += [f"{mean:+.1f}", f"[{fold_low:+.1f}, {fold_high:+.1f}]", f"[{low:+.1f}, {high:+.1f}]",
                         f"{sum(d > 0 for d in diffs)}/{len(pairs)}"]
            else:
                cols.append(f"{mean:+.1f} [{fold_low:+.1f}, {fold_high:+.1f}]")
        rows.append(cols)
        found.append(line)
    header = ["cell", "baseline", "Δ selected round, points", "95% CI, fold-clustered", "95% CI, pairs", "pairs up",
              "Δ last round [fold CI]", "Δ window mean [fold CI]"]
    return markdown_table(header, rows), found


def nested_cells(cells: list[Cell]) -> dict[Cell, list[Cell]]:
    """The nested rows and the cells each chooses among: per semi method with more than one strong view, the
    method over its views; per label setting with more than one semi cell, "semi" over all of them."""
    settings: dict[tuple[Labels, str], list[Cell]] = defaultdict(list)
    for cell in cells:
        if cell.method in SEMI_METHODS and cell.view != NESTED:
            settings[(cell.labels, cell.partition)].append(cell)
    out: dict[Cell, list[Cell]] = {}
    for (labels, partition), members in settings.items():
        for method in SEMI_METHODS:
            own = [c for c in members if c.method == method]
            if len(own) > 1:
                out[Cell(method, labels, partition, NESTED)] = own
        if len(members) > 1 and len({c.method for c in members}) > 1:
            out[Cell("semi", labels, partition, NESTED)] = members
    return out


def choose_nested(records: list[dict[str, object]], nested: Cell, candidates: list[Cell]
                  ) -> tuple[list[dict[str, object]], dict[int, str]]:
    """Per fold, the candidate with the best validation UAR (mean over the last 40% of rounds, mean over the fold's
    seeds); its runs of that fold become the nested row's. Only validation speakers decide: a fold's validation
    speakers are never its test speakers, so no fold's score has seen its own test speakers."""
    chosen_runs: list[dict[str, object]] = []
    choices: dict[int, str] = {}
    folds = sorted({int(r["fold"]) for c in candidates for r in _mine(records, c)})  # type: ignore[call-overload]
    for fold in folds:
        scored = []
        for position, cell in enumerate(candidates):
            runs = [r for r in _mine(records, cell) if r["fold"] == fold]
            if runs:
                scored.append((statistics.fmean(float(r["val_window_mean"]) for r in runs), -position, cell, runs))
        if not scored:
            continue
        _, _, cell, runs = max(scored, key=lambda item: item[:2])
        choices[fold] = cell.key
        chosen_runs += [{**r, "cell": nested.key, "chosen": cell.key} for r in runs]
    return chosen_runs, choices


def precision_tables(records: list[dict[str, object]], cells: list[Cell], class_names: list[str]) -> str:
    """Pseudo-label precision per semi cell: per assigned class, on speakers that kept labels and on label-free
    ones; then per training speaker (pooled over the runs in which it trained)."""
    semi = [c for c in cells if c.method in (*SEMI_METHODS, "semi") and _mine(records, c)]
    if not semi:
        return ""
    rows = []
    for cell in semi:
        mine = _mine(records, cell)
        taken = np.sum([r["pseudo_class_taken"] for r in mine], axis=0)
        right = np.sum([r["pseudo_class_correct"] for r in mine], axis=0)
        groups = {True: [0, 0], False: [0, 0]}
        for r in mine:
            for n, ok, labeled in r["pseudo_speakers"].values():  # type: ignore[attr-defined]
                groups[bool(labeled)][0] += n
                groups[bool(labeled)][1] += ok
        rows.append([cell.key, f"{taken.sum() / len(mine):.0f}", _share(right.sum(), taken.sum()),
                     *(f"{_share(right[c], taken[c])} ({taken[c] / len(mine):.0f})" for c in range(len(class_names))),
                     f"{_share(groups[True][1], groups[True][0])} ({groups[True][0] / len(mine):.0f})",
                     f"{_share(groups[False][1], groups[False][0])} ({groups[False][0] / len(mine):.0f})"])
    by_class = markdown_table(["cell", "rows/run", "precision", *(f"{n} (rows/run)" for n in class_names),
                               "speakers with labels", "label-free speakers"], rows)
    speakers = sorted({s for c in semi for r in _mine(records, c) for s in r["pseudo_speakers"]})  # type: ignore[attr-defined]
    speaker_rows = []
    for speaker in speakers:
        line = [speaker]
        for cell in semi:
            n = ok = 0
            for r in _mine(records, cell):
                n_taken, n_right, _ = r["pseudo_speakers"].get(speaker, (0, 0, False))  # type: ignore[attr-defined]
                n, ok = n + n_taken, ok + n_right
            line.append(f"{_share(ok, n)} of {n}" if n else "")
        speaker_rows.append(line)
    return by_class + "\n\n" + markdown_table(["speaker", *(c.key for c in semi)], speaker_rows)


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "—"


def plot_curves(records: list[dict[str, object]], cells: list[Cell], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab20").colors
    for position, cell in enumerate(cells):
        mine = [r["curve"] for r in _mine(records, cell) if "curve" in r]  # runs reused from accuracy.json have none
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
                        help="comma-separated METHOD[@LABELS][~PARTITION][+VIEW]: METHOD one of " + ", ".join(METHODS)
                             + " (semifedser = mvpl); LABELS a percentage (5, 10, 20, 40; default 100) or spkK "
                             "(K training speakers keep every label, the others none); PARTITION lack1 (default) or "
                             "2class; VIEW a semi cell's strong view, one of " + ", ".join(VIEWS) + " (default sfa), "
                             "e.g. scaffold~2class,fixmatch@spk2,mvpl@10+mixup (default: the committed table's cells)")
    parser.add_argument("--views", default="sfa",
                        help="strong views every semi cell without one runs with, comma-separated (" + ", ".join(VIEWS)
                             + "); with more than one, nested rows report each fold's choice on validation speakers")
    parser.add_argument("--normalise", choices=("speaker", "shard"), default="speaker",
                        help="z-score each training shard with its speaker's statistics (a device is one speaker) "
                             "or with the shard's own")
    parser.add_argument("--validation-speakers", type=int, default=None,
                        help="validation speakers per fold (default 2 when 4 training speakers remain, else 1)")
    parser.add_argument("--config", type=Path, default=None, help="a run-config TOML for the hyper-parameters")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set train.lr=0.1 (repeatable)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reuse", type=Path, default=None,
                        help="an accuracy_runs.jsonl whose finished runs (same cell, fold, seed, rounds and feature) are "
                             "taken instead of run again, e.g. to finish a run that was cut; same code and settings only")
    return parser.parse_args(argv)


def parse_cells(text: str | None) -> list[Cell]:
    if not text:
        return list(DEFAULT_CELLS)
    cells = []
    for item in text.split(","):
        item, _, view = item.strip().partition("+")
        view = view or "sfa"
        head, _, partition = item.partition("~")
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
        if view not in VIEWS:
            raise ConfigError(f"--cells: unknown view '{view}' (one of {', '.join(VIEWS)})")
        if view != "sfa" and method not in SEMI_METHODS:
            raise ConfigError(f"--cells: a strong view is a semi method's option; {method} takes none")
        cells.append(Cell(method, labels, partition, view))
    return cells


def with_views(cells: list[Cell], text: str) -> list[Cell]:
    """Each semi cell that names no view once per view of `text`, the others as they are."""
    views = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in views if v not in VIEWS]
    if unknown or not views:
        raise ConfigError(f"--views: unknown view '{unknown[0] if unknown else text}' (one of {', '.join(VIEWS)})")
    out: list[Cell] = []
    for cell in cells:
        expanded = [replace(cell, view=v) for v in views] if cell.method in SEMI_METHODS and cell.view == "sfa" else [cell]
        out += [c for c in expanded if c not in out]
    return out


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
    cells = with_views(parse_cells(args.cells), args.views)
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
    # seed-major: a run cut short still has every fold of its first seeds
    jobs = [(cell, fold, seed) for seed in range(seeds) for fold in folds for cell in cells]
    found = reusable_runs(args.reuse, args.feature)
    planned = {cell.key: cell_config(base, cell, 0, rounds).federation.rounds for cell in cells}  # centralized: epochs
    done = {key: r for key, r in found.items() if key[0] in planned and r.get("rounds") == planned[key[0]]}
    print(f"{len(jobs)} runs: {len(folds)} folds x {seeds} seeds x {len(cells)} cells, {rounds} rounds, "
          f"{args.workers} workers, normalised by {args.normalise}", flush=True)
    records: list[dict[str, object]] = []
    base_json = base.to_json()
    args.out.mkdir(parents=True, exist_ok=True)
    runs_log = args.out / "accuracy_runs.jsonl"  # every finished run with its curve, as it finishes
    runs_log.unlink(missing_ok=True)
    with ProcessPoolExecutor(max_workers=max(1, args.workers), initializer=_init_worker, initargs=(speakers,)) as pool:
        futures = [None if (cell.key, fold.index, seed) in done else
                   pool.submit(run_cell, base_json, cell, fold, seed, rounds, args.normalise) for cell, fold, seed in jobs]
        for (cell, fold, seed), future in zip(jobs, futures):
            record = done[(cell.key, fold.index, seed)] if future is None else future.result()
            records.append(record)
            with open(runs_log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            print(f"  fold {fold.index} seed {seed} {cell.key:20s} test UAR {100 * record['uar']:5.1f}  "
                  f"val {100 * record['val_uar']:5.1f} @ round {record['round']}  ({record['wall_s']:.0f} s)", flush=True)
    wall = time.perf_counter() - started
    choices: dict[str, dict[int, str]] = {}
    for nested, candidates in nested_cells(cells).items():
        chosen, choices[nested.key] = choose_nested(records, nested, candidates)
        records += chosen
        cells.append(nested)
    table, _rows = summarise(records, cells)
    paired, paired_rows = paired_table(records, cells)
    precision = precision_tables(records, cells, list(base.labels.class_names))
    choice_lines = "\n".join(f"- {key}: " + "; ".join(f"fold {f} {c}" for f, c in sorted(by_fold.items()))
                              for key, by_fold in choices.items())
    print()
    print(table)
    print()
    print(paired)
    if precision:
        print()
        print(precision)
    if choice_lines:
        print()
        print(choice_lines)
    (args.out / "accuracy.json").write_text(json.dumps({
        "runs": [{k: v for k, v in r.items() if k != "curve"} for r in records], "paired": paired_rows,
        "nested_choices": choices}, indent=1))
    plot_curves(records, cells, args.out / "accuracy_curves.png")
    fold_lines = "\n".join(f"- fold {f.index}: test {', '.join(f.test)}; validation {', '.join(f.validation)}; "
                           f"{len(f.train)} training speakers -> {len(f.train) * base.num_classes} clients" for f in folds)
    nested_text = (f"## Nested choices\n\n{choice_lines}\n\nA `+nested` row takes, in each fold, the candidate whose "
                   "validation-speaker UAR (mean over the last 40% of rounds, mean over the fold's seeds) is highest, "
                   "and reports that candidate's test UAR in that fold. `METHOD+nested` chooses among the method's "
                   "strong views, `semi+nested` among every semi-supervised cell of the setting. A fold's validation "
                   "speakers are never its own test speakers, so the score of a fold never depends on a choice made "
                   "on its test speakers; no choice is summed over folds.\n\n") if choice_lines else ""
    precision_text = (f"## Where pseudo-labels go wrong\n\n{precision}\n\nDistinct (client, row) pairs that trained "
                      "with a pseudo-label in a run, each with the last label it got, against the hidden truth: "
                      "precision per assigned class (and rows per run), on the clients of speakers that kept labels "
                      "and of label-free speakers; then per training speaker, pooled over the runs in which it "
                      "trained.\n\n") if precision else ""
    reused = sum(1 for cell, fold, seed in jobs if (cell.key, fold.index, seed) in done)
    reused_text = (f" ({reused} of the {len(jobs)} runs taken from `{args.reuse}`, not run again: see the command)"
                   if reused else "")
    body = (f"{len(folds)} folds x {seeds} seeds, {rounds} rounds (centralized: "
            f"{math.ceil(base.federation.fraction * rounds)} epochs), total wall time {wall / 60:.1f} min "
            f"with {args.workers} worker processes{reused_text}; training shards z-scored by {args.normalise}.\n\n"
            f"{table}\n\n"
            "Test UAR pooled over each fold's test speakers: at the round with the best validation-speaker UAR in the "
            "last 40% of rounds (selected), at the last round, and the mean over those last 40%; mean ± population "
            "std over folds x seeds. `labeled rows` is the share of training rows that kept their label. "
            "`supervised` runs the semi-supervised pipeline without its unlabeled term (weak SFA views of the labels, "
            "label-free clients sampled and sending empty updates, the steps of the labeled rows); "
            "`supervised-noaug` is plain supervised SCAFFOLD that samples only clients with labels. "
            "Pseudo-labels: distinct (client, row) pairs that trained with a pseudo-label per run, the uses "
            "(rows x participations) and the share matching the hidden true label. τ pass: share of examined "
            "unlabeled predictions that reached the confidence threshold; κ pass (MvPL): share that also had view "
            "uncertainty ≤ κ.\n\n"
            f"## Paired differences (same fold and seed)\n\n{paired}\n\n"
            "Each difference is a cell's test UAR minus its baseline's on the same fold and seed (semi-supervised "
            "cells against `supervised` with the same labels, `supervised` against `supervised-noaug`, SCAFFOLD "
            "against FedAvg on the same partition). The seeds of a fold share its test speakers, so the CI that "
            "counts is fold-clustered: the mean difference over seeds per fold, Student t over the folds; the CI "
            "over all pairs (which treats them as independent) is printed beside it.\n\n"
            f"{nested_text}{precision_text}"
            f"![UAR against rounds](accuracy_curves.png)\n\n## Folds\n\n{fold_lines}\n\n"
            "## Run configuration\n\nThe base configuration below; each cell then sets `federation.algorithm` "
            "(fedavg for fedavg and centralized, scaffold otherwise), `federation.rounds`, `federation.seed`, "
            "`train.eval_fraction = 0` (scores come from held-out speakers), `semi.enabled` and `semi.method` "
            "(supervised, mvpl, fixmatch; supervised-noaug runs with semi off) and a view's options (mixup: "
            "`semi.strong_mixup = 0.3`, mask: `semi.strong_mask = 0.2`, style: `semi.strong_style = true`, each shard's "
            "style bank holding the other training speakers' statistics); centralized is one client holding every "
            "shard, fraction 1, one epoch per round, its learning rate decayed after the same share of training."
            f"\n\n```toml\n{_config_toml(base)}```\n")
    path = write_results("accuracy", f"Accuracy on {args.corpus.name} ({args.feature})", _command(argv), facts, body, args.out)
    print(f"\nwrote {path}, {args.out / 'accuracy.json'}, {args.out / 'accuracy_curves.png'}")
    lead = next((c for c in cells if c.method in SEMI_METHODS and c.view != NESTED), cells[0])
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
