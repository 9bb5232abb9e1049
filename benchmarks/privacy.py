"""What fedser's server can learn about a speaker from what it receives: the attribute-inference attack of
Feng et al. 2021 (arXiv 2112.13416, usc-sail/fed-ser-leakage) on plain updates, on secure-aggregation sums,
and on sums under distributed DP; with the emotion UAR each defence costs (DESIGN §6 protocol), the
privacy-utility curve over epsilon, and the emotion cost at the headline epsilon for larger simulated populations.

    python benchmarks/privacy.py [--corpus ../shared/data/nemo4] [--quick] [--out DIR] [--workers N]

Attack. One federation per seed over every speaker (4 lack1 shards each, FedAvg, fraction 0.2: 8 of 36
shards per round on nemo4), each update recorded as the server receives it. Folds: every (female, male)
pair of speakers is held out once as the private targets; the other speakers are the attacker's shadow
speakers (public data, gender known). Two attackers, reported apart:
- computed (the paper's, the headline): the attacker trains each of its shadow speakers' shards itself, with
  its own trainer and randomness, on every round's published global model and the round's public task, so it
  holds one training update per shadow shard per round (about 1,400 per fold on nemo4 at 50 rounds);
- received: it trains on the shadow clients' updates the server happened to receive (about 310 per fold).
Features: the first layer's change (and all layers', reported apart): its bias change, and the weight change
projected on the principal components of all received updates (no labels used). Classifiers: a small MLP and
logistic regression; per fold one of them is chosen on the shadow speakers alone (inner (female, male) shadow
pairs held out in turn), never on the private speakers' score. Scores: UAR per update and per client (a
speaker's updates' mean probability), with a bootstrap over speakers (calls of one speaker are not independent).

Under secure aggregation (fedser's SecAgg+ run in process, fedser_sim.secure_round) the server learns each
round's sum (the global model's change times the summed weight) and who was sampled. The attack on sums solves
the linear system that overlapping samples give (every difference of sums across rounds whose samples overlap,
at once): per-client mean updates by least squares from the round sums, then the same classifiers on the
shadow clients' estimates. Under secagg + DP each client clips to C and adds N(0, (zC)^2/m) before masking, so
the sum carries N(0, (zC)^2); z from dp-accounting for the target epsilon over the run (q = sampled/clients).
The emotion runs of secagg + DP leave the masking out (the same sum up to quantisation; the masking's own
cost is the secagg row).

Population: each training speaker's 4 shards split further (16, 64, ... shards per speaker), fraction 0.2 of
them per round, FedAvg against secagg + DP at the headline epsilon with C adapted to the median update norm
(Andrew et al. 2021, accounted). Shards of one speaker are not independent users: the user-level guarantee is
per shard, not per speaker.

Results are saved after every finished row; `--report-from privacy.json` writes the report of a stopped run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_facts, markdown_table, write_results  # noqa: E402
from accuracy import (  # noqa: E402  (the DESIGN §6 protocol: folds, shards, normalisation, round selection)
    SELECT_FRACTION,
    Labels,
    _init_worker,
    eval_set,
    load_speakers,
    make_shards,
    paired_difference,
    speaker_folds,
)

from fedser_client.core.data import ClientData  # noqa: E402
from fedser_client.core.state import LocalState  # noqa: E402
from fedser_client.core.trainer import LocalTrainer, TrainTask, stable_seed  # noqa: E402
from fedser_server.core.round_plan import task_spec  # noqa: E402
from fedser_server.core.strategy import FedAvg, State  # noqa: E402
from fedser_shared.config import RunConfig, load_run_config  # noqa: E402
from fedser_shared.errors import DataError, FedserError  # noqa: E402
from fedser_shared.metrics import uar  # noqa: E402
from fedser_shared.weights import initial_weights  # noqa: E402
from fedser_sim.inprocess_engine import federate, make_clients  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIRST_LAYER = ("delta.hidden.0.weight", "delta.hidden.0.bias")
LAYERS = ("first layer", "all layers")
COMPONENTS = 64


@dataclass(frozen=True)
class Defence:
    """What the server sees: every update (none), round sums (secagg), or sums of clipped, noised updates."""

    name: str
    epsilon: float | None = None  # secagg+dp: the target epsilon over the run (inf: clipping, no noise)

    @property
    def key(self) -> str:
        return self.name if self.epsilon is None else f"{self.name}@{_eps(self.epsilon)}"


def _eps(value: float | None) -> str:
    return "—" if value is None else "∞" if math.isinf(value) else f"{value:g}"


def read_genders(corpus: Path) -> dict[str, str]:
    with open(corpus / "manifest.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "gender" not in (reader.fieldnames or []):
            raise DataError(f"{corpus / 'manifest.csv'} has no gender column: the attack needs each speaker's gender")
        genders = {row["speaker"]: row["gender"].strip().lower() for row in reader}
    return genders


def attack_folds(genders: dict[str, str], speakers: list[str]) -> list[tuple[str, str]]:
    """Every (female, male) pair of speakers: held out together, both genders in every test fold."""
    female = sorted(s for s in speakers if genders.get(s) == "female")
    male = sorted(s for s in speakers if genders.get(s) == "male")
    if not female or not male:
        raise DataError("the attack needs speakers of both genders")
    return [(f, m) for f in female for m in male]


def privacy_overrides(defence: Defence, clip: float, secure: bool = True) -> dict[str, object]:
    """The [privacy] settings of a defence; `secure=False` leaves the masking out (the same sum, up to quantisation)."""
    out: dict[str, object] = {"privacy.secure_aggregation": "secagg+"} if secure and defence.name != "none" else {}
    if defence.name == "secagg+dp":
        out.update({"privacy.dp": "distributed", "privacy.clip_norm": clip})
        if defence.epsilon is not None and math.isinf(defence.epsilon):
            out["privacy.noise_multiplier"] = 0.0
        else:
            out["privacy.target_epsilon"] = defence.epsilon
    return out


def with_overrides(base: RunConfig, overrides: dict[str, object]) -> RunConfig:
    tree = base.model_dump()
    for dotted, value in overrides.items():
        section, name = dotted.split(".")
        tree[section][name] = value
    return RunConfig.model_validate(tree)


# ---- the attack federation: every update as the server receives it

@dataclass
class Recording:
    """What the server received in one federation: each update (plain), or each round's sum and who took part
    (secure aggregation); flattened first layer first, float32."""

    rounds: list[int] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    sums: list[tuple[tuple[str, ...], np.ndarray]] = field(default_factory=list)
    layout: list[tuple[str, slice]] = field(default_factory=list)  # tensor name -> its columns
    epsilon: float | None = None
    noise_multiplier: float | None = None
    round_seconds: list[float] = field(default_factory=list)
    bytes_sent: list[int] = field(default_factory=list)  # per client per round (secure rounds: keys, shares, masked input)
    published: list[State] = field(default_factory=list)  # the global model each round's clients trained on (public)

    def flat(self, tensors: Mapping[str, np.ndarray], prefix: str = "delta.") -> np.ndarray:
        names = [*FIRST_LAYER, *sorted(n for n in (prefix + t[len(prefix):] for t in tensors) if n not in FIRST_LAYER)]
        if not self.layout:
            offsets = np.cumsum([0] + [tensors[n].size for n in names])
            self.layout = [(n, slice(int(a), int(b))) for n, a, b in zip(names, offsets[:-1], offsets[1:])]
        return np.concatenate([np.asarray(tensors[n], np.float32).reshape(-1) for n, _ in self.layout])

    def observe(self, round_index: int, client: str, update: Mapping[str, np.ndarray], n_samples: int) -> None:
        self.rounds.append(round_index)
        self.clients.append(client)
        self.vectors.append(self.flat({n: v for n, v in update.items() if n.startswith("delta.")}))
        self.bytes_sent.append(4 * self.vectors[-1].size)


def record_federation(config: RunConfig, shards: dict[str, ClientData], dim: int, sums_only: bool) -> Recording:
    """Run the federation. Without `sums_only` every update is recorded; with it, each round's sum as the server
    learns it under secure aggregation: the global model's change times the summed weight (a DP round weighs every
    client 1). A run without the masking gives the same sum up to quantisation."""
    recording = Recording()
    secure = config.privacy.secure
    previous = FedAvg().initial_state(initial_weights(dim, config.num_classes, config.model.hidden, config.federation.seed))
    sizes = {name: len(data.y_train) for name, data in shards.items()}
    for result in federate(config, make_clients(config, shards), dim, None if sums_only else recording.observe):
        recording.published.append(previous)
        recording.round_seconds.append(result.tally.seconds)
        if result.privacy is not None:
            recording.epsilon = result.privacy["dp_epsilon"] if result.privacy["dp_epsilon"] is not None else math.inf
            recording.noise_multiplier = result.privacy["dp_noise_multiplier"]
        if sums_only:
            change = {"delta." + n[2:]: (result.state[n].astype(np.float64) - previous[n]) / config.federation.server_lr
                      for n in result.state if n.startswith("w.")}
            weight = len(result.sampled) if config.privacy.dp_enabled else sum(sizes[c] for c in result.sampled)
            recording.sums.append((result.sampled, weight * recording.flat(change)))
        if secure:
            assert result.secure is not None
            recording.bytes_sent += [t.sent for t in result.secure.traffic.values()]
        previous = result.state
    return recording


def all_shards(speakers: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int, seed: int) -> dict[str, ClientData]:
    shards: dict[str, ClientData] = {}
    for speaker, (x, y) in speakers.items():
        shards.update(make_shards(x, y, speaker, num_classes, Labels(), True, seed))
    return shards


@dataclass
class FeatureMap:
    """An update's attack features: its bias changes as they are, and the scores of its weight changes on the
    leading principal components of a reference set of updates (the ones the server received: unlabeled, so the
    attacker may fit on all of them); weight changes are too wide to feed a classifier trained on a few hundred
    or thousand updates."""

    layout: list[tuple[str, slice]]
    layers: str
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    basis: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))  # weight columns x components

    def _chosen(self) -> list[tuple[str, slice]]:
        return [(n, c) for n, c in self.layout if self.layers == "all layers" or n in FIRST_LAYER]

    def _weights(self, rows: np.ndarray) -> np.ndarray:
        return np.concatenate([rows[:, c] for n, c in self._chosen() if n.endswith(".weight")], axis=1)

    def fit(self, rows: np.ndarray) -> FeatureMap:
        weights = self._weights(rows)
        self.mean = weights.mean(axis=0)
        centred = (weights - self.mean).astype(np.float32)
        gram = (centred @ centred.T).astype(np.float64)  # rows x rows: the axes without an SVD of the wide matrix
        values, vectors = np.linalg.eigh(gram)
        order = [i for i in np.argsort(values)[::-1][:COMPONENTS] if values[i] > 1e-12 * max(values.max(), 1e-30)]
        self.basis = (centred.T @ (vectors[:, order] / np.sqrt(values[order]))).astype(np.float32)
        return self

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        biases = [rows[:, c].astype(np.float32) for n, c in self._chosen() if n.endswith(".bias")]
        return np.concatenate([*biases, (self._weights(rows) - self.mean) @ self.basis], axis=1)


def attack_features(rows: np.ndarray, layout: list[tuple[str, slice]], layers: str) -> np.ndarray:
    return FeatureMap(layout, layers).fit(rows)(rows)


def classifiers(seed: int) -> dict[str, object]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # a capped iteration count is the choice made
    return {"mlp": make_pipeline(StandardScaler(), MLPClassifier((32,), alpha=1e-1, solver="lbfgs", max_iter=300,
                                                                 random_state=seed)),
            "logreg": make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced"))}


def _uar_binary(truth: np.ndarray, predicted: np.ndarray) -> float:
    recalls = [float(np.mean(predicted[truth == c] == c)) for c in (0, 1) if np.any(truth == c)]
    return statistics.fmean(recalls)


@dataclass
class AttackScore:
    per_update: list[float] = field(default_factory=list)   # one UAR per fold
    calls: list[tuple[str, int, int]] = field(default_factory=list)  # (speaker, truth, call) per private speaker per fold
    chosen: list[str] = field(default_factory=list)  # the classifier the inner split chose, per fold ("selected" only)

    @property
    def per_client(self) -> float:
        return _uar_binary(np.array([t for _, t, _ in self.calls]), np.array([c for _, _, c in self.calls])) \
            if self.calls else float("nan")

    @property
    def right(self) -> str:
        return f"{sum(t == c for _, t, c in self.calls)}/{len(self.calls)}"


CANDIDATES = ("mlp", "logreg")  # the attack classifiers; "selected" picks one per fold on shadow speakers alone
INNER_PAIRS = 3


def inner_pairs(shadow: list[str], genders: dict[str, str]) -> list[tuple[str, str]]:
    """(female, male) pairs of shadow speakers held out in turn to choose the classifier; never a private speaker."""
    female = sorted(s for s in shadow if genders[s] == "female")
    male = sorted(s for s in shadow if genders[s] == "male")
    if len(female) < 2 or len(male) < 2:  # holding a pair out must leave both genders to train on
        return []
    return [(female[i % len(female)], male[i % len(male)]) for i in range(min(INNER_PAIRS, max(len(female), len(male))))]


def _probability(name: str, seed: int, x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    model = classifiers(seed)[name]
    model.fit(x, y)  # type: ignore[attr-defined]
    return np.asarray(model.predict_proba(x_new)[:, 1])  # type: ignore[attr-defined]


def choose_classifier(x: np.ndarray, y: np.ndarray, speaker_of: np.ndarray, genders: dict[str, str], seed: int) -> str:
    """The candidate with the best mean per-update UAR over inner splits of the attacker's own (shadow) data."""
    score = {}
    for name in CANDIDATES:
        uars = []
        for pair in inner_pairs(sorted(set(speaker_of.tolist())), genders):
            held = np.isin(speaker_of, pair)
            uars.append(_uar_binary(y[held], (_probability(name, seed, x[~held], y[~held], x[held]) >= 0.5).astype(int)))
        score[name] = statistics.fmean(uars) if uars else 0.0
    return max(CANDIDATES, key=lambda n: score[n])  # a tie keeps the first


@dataclass
class Updates:
    """Attack features of a set of updates and whose speaker each came from."""

    features: np.ndarray
    speakers: np.ndarray

    def labels(self, genders: dict[str, str]) -> np.ndarray:
        return np.array([1 if genders[s] == "female" else 0 for s in self.speakers])


def attack_updates(train: Updates, targets: Updates, genders: dict[str, str], folds: list[tuple[str, str]],
                   seed: int) -> dict[str, AttackScore]:
    """Per fold: train on the shadow speakers' rows of `train`, score the private pair's rows of `targets` per
    update and per speaker (the mean probability of its updates). `train` is what the server received (the same
    set as `targets`) or what the attacker computed itself; a private speaker's rows of `train` are never used."""
    y_train, y_targets = train.labels(genders), targets.labels(genders)
    scores = {name: AttackScore() for name in (*CANDIDATES, "selected")}
    for pair in folds:
        shadow, private = ~np.isin(train.speakers, pair), np.isin(targets.speakers, pair)
        chosen = choose_classifier(train.features[shadow], y_train[shadow], train.speakers[shadow], genders, seed)
        for name in CANDIDATES:
            probability = _probability(name, seed, train.features[shadow], y_train[shadow], targets.features[private])
            for view in [name, "selected"] if name == chosen else [name]:
                score = scores[view]
                score.per_update.append(_uar_binary(y_targets[private], (probability >= 0.5).astype(int)))
                for speaker in pair:
                    mine = targets.speakers[private] == speaker
                    score.calls.append((speaker, int(genders[speaker] == "female"), int(probability[mine].mean() >= 0.5)))
        scores["selected"].chosen.append(chosen)
    return scores


def speaker_bootstrap(calls: list[tuple[str, int, int]], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the per-client UAR when the speakers themselves are resampled (with replacement, within
    each gender): the calls of one speaker across folds and seeds are not independent."""
    by_speaker: dict[str, list[tuple[int, int]]] = {}
    for speaker, truth, call in calls:
        by_speaker.setdefault(speaker, []).append((truth, call))
    groups = [[s for s in sorted(by_speaker) if by_speaker[s][0][0] == g] for g in (0, 1)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = [s for group in groups for s in rng.choice(group, len(group))]
        pairs = [tc for s in drawn for tc in by_speaker[s]]
        values.append(_uar_binary(np.array([t for t, _ in pairs]), np.array([c for _, c in pairs])))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def unmix_sums(recording: Recording) -> tuple[list[str], np.ndarray]:
    """Per-client mean updates estimated from round sums alone: least squares over the rounds' memberships
    (the differences of sums across rounds whose samples overlap, all used at once)."""
    finite = [(sampled, total) for sampled, total in recording.sums if np.all(np.isfinite(total))]
    clients = sorted({c for sampled, _ in finite for c in sampled})
    column = {c: i for i, c in enumerate(clients)}
    membership = np.zeros((len(finite), len(clients)))
    for row, (sampled, _) in enumerate(finite):
        membership[row, [column[c] for c in sampled]] = 1.0
    sums = np.stack([total for _, total in finite]).astype(np.float64)
    return clients, (np.linalg.pinv(membership) @ sums).astype(np.float32)  # clients x coordinates


def attack_sums(recording: Recording, layers: str, genders: dict[str, str], folds: list[tuple[str, str]],
                seed: int) -> dict[str, AttackScore]:
    clients, estimate = unmix_sums(recording)
    estimates = Updates(attack_features(estimate, recording.layout, layers), np.array([c.rsplit("-", 1)[0] for c in clients]))
    return attack_updates(estimates, estimates, genders, folds, seed)


def computed_updates(config: RunConfig, shards: dict[str, ClientData], recording: Recording,
                     maps: dict[str, FeatureMap], seed: int) -> dict[str, Updates]:
    """The attacker's own training updates (Feng et al. 2021): every shard of its shadow speakers trained, with
    its own trainer and randomness, on every round's published global model, with the round's public task.
    Computed here for every speaker's shards once; each fold uses only its shadow speakers' (the attacker never
    holds a private speaker's data). Projected round by round with the maps fitted on the received updates."""
    trainers = {name: LocalTrainer(config, data, stable_seed("attacker", seed, name)) for name, data in shards.items()}
    features: dict[str, list[np.ndarray]] = {layers: [] for layers in maps}
    speakers: list[str] = []
    for round_index, model in enumerate(recording.published, start=1):
        spec = task_spec(config, round_index)
        task = TrainTask(round=round_index, lr=spec.lr, local_epochs=spec.local_epochs, pseudo_threshold=spec.pseudo_threshold)
        rows = []
        for name, trainer in trainers.items():
            update, _state, report = trainer.train(model, task, LocalState())
            if report.metrics.n_samples:
                rows.append(recording.flat({n: v for n, v in update.items() if n.startswith("delta.")}))
                speakers.append(name.rsplit("-", 1)[0])
        matrix = np.stack(rows)
        for layers, feature_map in maps.items():
            features[layers].append(feature_map(matrix))
    return {layers: Updates(np.concatenate(parts), np.array(speakers)) for layers, parts in features.items()}


def run_attack(base_json: str, genders: dict[str, str], defence: Defence, seed: int, rounds: int, clip: float,
               folds: list[tuple[str, str]], masked: bool = True) -> list[dict[str, object]]:
    """One recorded federation and the attack on what the server sees. `masked=False` runs a defence's DP without
    the SecAgg+ masking (the same sums up to quantisation, at a fraction of the time; no round-time figure)."""
    from accuracy import _SPEAKERS

    started = time.perf_counter()
    config = with_overrides(RunConfig.from_json(base_json), {
        "federation.seed": seed, "federation.rounds": rounds, "federation.algorithm": "fedavg",
        "train.eval_fraction": 0.0, **privacy_overrides(defence, clip, secure=masked)})
    shards = all_shards(_SPEAKERS, config.num_classes, seed)
    dim = next(iter(shards.values())).feature_dim
    recording = record_federation(config, shards, dim, sums_only=defence.name != "none")
    result: dict[str, object] = {"defence": defence.key, "seed": seed, "epsilon": recording.epsilon,
                                 "noise_multiplier": recording.noise_multiplier,
                                 "masked": masked or defence.name == "none",
                                 "round_s": statistics.fmean(recording.round_seconds),
                                 "bytes_per_client": statistics.fmean(recording.bytes_sent) if recording.bytes_sent else None,
                                 "updates": len(recording.vectors) or len(recording.sums),
                                 "norm_median": float(np.median([np.linalg.norm(v) for v in recording.vectors]))
                                 if recording.vectors else None}
    views: dict[str, dict[str, AttackScore]] = {}
    if defence.name == "none":
        received = np.stack(recording.vectors)
        speaker_of = np.array([c.rsplit("-", 1)[0] for c in recording.clients])
        maps = {layers: FeatureMap(recording.layout, layers).fit(received) for layers in LAYERS}
        targets = {layers: Updates(feature_map(received), speaker_of) for layers, feature_map in maps.items()}
        own = computed_updates(config, shards, recording, maps, seed)
        result["computed_updates"] = len(own["first layer"].speakers)
        for layers in LAYERS:
            views[f"received/{layers}"] = attack_updates(targets[layers], targets[layers], genders, folds, seed)
            views[f"computed/{layers}"] = attack_updates(own[layers], targets[layers], genders, folds, seed)
    else:
        # a model the noise drove to overflow gives non-finite sums from then on: the server attacks the rounds before
        finite = [bool(np.all(np.isfinite(total))) for _, total in recording.sums]
        result["finite_rounds"] = sum(finite)
        if sum(finite) >= 2:
            for layers in LAYERS:
                views[f"sums/{layers}"] = attack_sums(recording, layers, genders, folds, seed)
    for view, scores in views.items():
        for name, score in scores.items():
            result[f"{view}/{name}"] = {"per_update": score.per_update, "per_client": score.per_client,
                                        "calls": score.calls, "right": score.right, "chosen": score.chosen}
    result["wall_s"] = time.perf_counter() - started
    return [result]


# ---- emotion UAR under each defence (DESIGN §6: speaker folds, validation speakers, the selected round)

def split_further(shards: dict[str, ClientData], parts: int, seed: int) -> dict[str, ClientData]:
    """Each shard cut into `parts` clients of its rows (seeded), to simulate a larger population."""
    if parts <= 1:
        return shards
    out = {}
    for name, data in shards.items():
        rows = np.random.default_rng(stable_seed(seed, name, "split")).permutation(len(data.y_train))
        for k, chunk in enumerate(np.array_split(rows, parts)):
            chunk = np.sort(chunk)
            if len(chunk):
                out[f"{name}.{k}"] = ClientData(data.x_train[chunk], data.y_train[chunk], data.x_eval, data.y_eval,
                                                data.hidden_labels[chunk])
    return out


def emotion_run(base_json: str, overrides: dict[str, object], fold_index: int, n_folds: int, seed: int, rounds: int,
                parts: int) -> dict[str, object]:
    from accuracy import _SPEAKERS

    started = time.perf_counter()
    config = with_overrides(RunConfig.from_json(base_json), {
        "federation.seed": seed, "federation.rounds": rounds, "federation.algorithm": "fedavg",
        "train.eval_fraction": 0.0, **overrides})
    fold = speaker_folds(list(_SPEAKERS), n_folds)[fold_index]
    shards: dict[str, ClientData] = {}
    for speaker in fold.train:
        x, y = _SPEAKERS[speaker]
        shards.update(make_shards(x, y, speaker, config.num_classes, Labels(), True, seed))
    shards = split_further(shards, parts, seed)
    validation = LocalTrainer(config, eval_set(_SPEAKERS, fold.validation), 0)
    test = LocalTrainer(config, eval_set(_SPEAKERS, fold.test), 0)
    first_candidate = rounds - max(1, int(SELECT_FRACTION * rounds)) + 1
    window, seconds, epsilon = [], [], None
    dim = next(iter(shards.values())).feature_dim
    for result in federate(config, make_clients(config, shards), dim):
        seconds.append(result.tally.seconds)
        if result.privacy is not None:
            epsilon = result.privacy["dp_epsilon"] if result.privacy["dp_epsilon"] is not None else math.inf
        if result.round >= first_candidate:
            window.append((uar(validation.evaluate(result.state)[0]), result.round, uar(test.evaluate(result.state)[0])))
    best = max(window, key=lambda w: (w[0], -w[1]))
    finite = all(bool(np.all(np.isfinite(v))) for v in result.state.values())
    return {"fold": fold_index, "seed": seed, "uar": best[2], "round": best[1], "epsilon": epsilon, "finite": finite,
            "clients": len(shards), "round_s": statistics.fmean(seconds), "wall_s": time.perf_counter() - started}


# ---- the run

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "nemo4")
    parser.add_argument("--feature", default="emobase")
    parser.add_argument("--quick", action="store_true", help="1 seed, 20 attack rounds, emotion on 1 fold x 30 rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--seeds", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--attack-rounds", type=int, default=None, help="default 50 (20 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="emotion runs: default 100 (30 with --quick)")
    parser.add_argument("--folds", type=int, default=5, help="emotion runs: speaker folds (DESIGN §6)")
    parser.add_argument("--emotion-folds", type=int, default=None, help="how many of them to run (default all; 1 with --quick)")
    parser.add_argument("--epsilons", default=None, help="secagg+dp target epsilons (default 1,4,8,16,64,inf; 8 with --quick)")
    parser.add_argument("--headline-epsilon", type=float, default=8.0)
    parser.add_argument("--clip", type=float, default=None,
                        help="clip norm C (default: the median update norm of the undefended federation of seed 0)")
    parser.add_argument("--curve-seeds", type=int, default=None,
                        help="seeds of the epsilon curve's points other than --headline-epsilon (default: --seeds)")
    parser.add_argument("--curve-attack-seeds", type=int, default=None,
                        help="seeds of the curve's attack federations (default: --curve-seeds)")
    parser.add_argument("--shards-per-speaker", default=None,
                        help="population sweep at the headline epsilon: shards per training speaker, multiples of 4 "
                             "(default 4,16,64; none with --quick)")
    parser.add_argument("--population-seeds", type=int, default=1, help="seeds of the population sweep")
    parser.add_argument("--report-from", type=Path, default=None,
                        help="write the report from a saved privacy.json (a partial run's) without running anything")
    parser.add_argument("--resume", type=Path, default=None,
                        help="keep the rows of a stopped run's privacy.json and run only the missing ones")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    shards = [int(p) for p in (args.shards_per_speaker or ("" if args.quick else "4,16,64")).split(",") if p]
    if any(n < 4 or n % 4 for n in shards):
        parser.error(f"--shards-per-speaker takes multiples of 4 (each speaker's 4 class-lacking shards split further), got {shards}")
    args.population = [n // 4 for n in shards]
    return args


def _mean_sd(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return "—"
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.fmean(values):.{digits}f} ± {scale * sd:.{digits}f}"


@dataclass
class Plan:
    """What one run measures (saved with its results so that a partial run's file can be reported)."""

    seeds: int
    curve_seeds: int
    attack_rounds: int
    rounds: int
    emotion_folds: int
    folds: int
    epsilons: list[float]
    headline_epsilon: float
    population: list[int]
    population_seeds: int
    curve_attack_seeds: int | None = None  # the curve's attack federations, when fewer than its emotion seeds

    @property
    def defences(self) -> list[Defence]:
        return [Defence("none"), Defence("secagg"), *(Defence("secagg+dp", e) for e in self.epsilons)]

    def seeds_of(self, defence: Defence, attack: bool = False) -> int:
        curve = defence.name == "secagg+dp" and defence.epsilon != self.headline_epsilon
        if curve and attack and self.curve_attack_seeds is not None:
            return min(self.seeds, self.curve_attack_seeds)
        return min(self.seeds, self.curve_seeds) if curve else self.seeds

    @property
    def headline_key(self) -> str:
        return Defence("secagg+dp", self.headline_epsilon).key


def population_keys(plan: Plan, parts: int) -> tuple[str, str]:
    return ("none" if parts == 1 else f"none x{parts}"), f"{plan.headline_key} adaptive x{parts}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.report_from is not None:
        saved = json.loads(args.report_from.read_text())
        plan = Plan(**saved["plan"])
        report(args, argv, saved["facts"], saved["wall_s"], saved["attack"], saved["emotion"], plan, saved["clip"],
               saved["attack_folds"], partial=saved.get("partial", True), failed=saved.get("failed", []))
        return
    # one BLAS thread per process: the classifiers' small products thrash when threads outnumber free cores
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    seeds = args.seeds or (1 if args.quick else 3)
    epsilons = [float(e) for e in (args.epsilons or ("8" if args.quick else "1,4,8,16,64,inf")).split(",")]
    if args.headline_epsilon not in epsilons:
        epsilons.append(args.headline_epsilon)
    plan = Plan(seeds=seeds, curve_seeds=args.curve_seeds or seeds, attack_rounds=args.attack_rounds or (20 if args.quick else 50),
                rounds=args.rounds or (30 if args.quick else 100), emotion_folds=args.emotion_folds or (1 if args.quick else args.folds),
                folds=args.folds, epsilons=epsilons, headline_epsilon=args.headline_epsilon, population=args.population,
                population_seeds=min(seeds, args.population_seeds), curve_attack_seeds=args.curve_attack_seeds)
    base = load_run_config(None, {"features.name": args.feature})
    if not args.corpus.is_dir():
        raise DataError(f"corpus directory not found: {args.corpus}")
    started = time.perf_counter()
    facts = machine_facts()
    genders = read_genders(args.corpus)
    speakers = load_speakers(args.corpus, args.feature, base.labels, args.workers)
    folds = attack_folds(genders, list(speakers))
    import torch

    torch.set_num_threads(1)
    attack: list[dict[str, object]] = []
    emotion: dict[str, list[dict[str, object]]] = {}
    failed: list[str] = []
    clip = math.nan
    wall_before = 0.0
    if args.resume is not None:  # a stopped run's rows are kept; only the missing ones run
        saved = json.loads(args.resume.read_text())
        attack, emotion, clip, wall_before = saved["attack"], saved["emotion"], saved["clip"], saved["wall_s"]
        first = saved["facts"]
        facts["resumed"] = (f"this run resumed a stopped one (started {first.get('date')}, commit {first.get('commit')}, "
                            f"load average at start {first.get('load average at start')}, {wall_before / 60:.1f} min), "
                            f"keeping its {len(attack)} attack rows and {sum(map(len, emotion.values()))} emotion runs")
    args.out.mkdir(parents=True, exist_ok=True)

    def save(partial: bool) -> None:  # after every result: a run stopped early still leaves what it measured
        (args.out / "privacy.json").write_text(json.dumps({
            "plan": plan.__dict__, "facts": facts, "wall_s": wall_before + time.perf_counter() - started,
            "partial": partial, "failed": failed, "clip": clip, "attack_folds": folds, "attack": attack,
            "emotion": emotion}, indent=1))

    def take(result: dict[str, object]) -> None:
        attack.append(result)
        column = "computed/first layer" if result["defence"] == "none" else "sums/first layer"
        if f"{column}/selected" not in result:
            print(f"  seed {result['seed']} {result['defence']:14s} no finite round sum to attack (the model diverged)  "
                  f"({result['wall_s']:.0f} s)", flush=True)
            save(True)
            return
        scores = "; ".join(f"{name} per client {result[f'{column}/{name}']['per_client']:.2f} "  # type: ignore[index]
                           f"({result[f'{column}/{name}']['right']} right), per update "  # type: ignore[index]
                           f"{statistics.fmean(result[f'{column}/{name}']['per_update']):.2f}"  # type: ignore[index]
                           for name in ("selected", *CANDIDATES))
        extra = ""
        if result["defence"] == "none":
            received = result["received/first layer/selected"]
            extra = (f"  [received shadow updates: per client {received['per_client']:.2f} "  # type: ignore[index]
                     f"({received['right']} right)]")  # type: ignore[index]
        print(f"  seed {result['seed']} {result['defence']:14s} {column}: {scores}{extra}  epsilon {_eps(result['epsilon'])}  "
              f"({result['wall_s']:.0f} s)", flush=True)
        save(True)

    print(f"attack: {len(folds)} folds (female, male held out), {plan.seeds} seeds ({plan.curve_seeds} off the headline "
          f"epsilon), {plan.attack_rounds} rounds, defences {', '.join(d.key for d in plan.defences)}", flush=True)
    base_json = base.to_json()
    pool = ProcessPoolExecutor(max_workers=max(1, args.workers), initializer=_init_worker, initargs=(speakers,))
    if not any((a["defence"], a["seed"]) == ("none", 0) for a in attack):
        first_run = pool.submit(run_attack, base_json, genders, Defence("none"), 0, plan.attack_rounds, 1.0, folds)
        take(first_run.result()[0])
        clip = args.clip or float(attack[-1]["norm_median"])  # type: ignore[arg-type]
    print(f"  clip norm C = {clip:.4g}" + ("" if args.clip else " (median norm of the undefended updates, seed 0)"), flush=True)
    # submitted headline first (none, secagg, the headline epsilon), then the epsilon curve, then the population
    ordered = sorted(plan.defences, key=lambda d: d.name == "secagg+dp" and d.epsilon != plan.headline_epsilon)
    done = {(a["defence"], a["seed"]) for a in attack}
    attack_jobs = [(d, seed) for d in ordered for seed in range(plan.seeds_of(d, attack=True)) if (d.key, seed) not in done]

    # emotion UAR: plain FedAvg against secagg (its in-process protocol) and secagg+dp at each epsilon, same folds
    # and seeds; secagg+dp as distributed DP without the masking (the same sum up to quantisation: the masking's own
    # cost is the secagg row), to keep the epsilon curve affordable
    settings: list[tuple[str, dict[str, object], int, int]] = [
        (d.key if d.name != "none" else "none",
         privacy_overrides(d, clip, secure=d.name == "secagg"), 1, plan.seeds_of(d)) for d in ordered]
    for parts in plan.population:  # at the headline epsilon, C adapted to the median norm (these clients' updates are smaller)
        none_key, dp_key = population_keys(plan, parts)
        if parts > 1:
            settings.append((none_key, {}, parts, plan.population_seeds))
        settings.append((dp_key, {**privacy_overrides(Defence("secagg+dp", plan.headline_epsilon), clip, secure=False),
                                  "privacy.adaptive_clip_quantile": 0.5}, parts, plan.population_seeds))
    finished = {(key, r["fold"], r["seed"]) for key, records in emotion.items() for r in records}
    jobs = [(key, overrides, fold, seed, parts) for key, overrides, parts, n_seeds in settings
            for fold in range(plan.emotion_folds) for seed in range(n_seeds) if (key, fold, seed) not in finished]
    print(f"emotion: {len(jobs)} runs ({plan.emotion_folds} folds, {len(settings)} settings, {plan.rounds} rounds)", flush=True)
    def tier(key: str) -> int:  # the headline's rows first, then the epsilon curve, then the population
        return 2 if " x" in key else 1 if key.startswith("secagg+dp") and key != plan.headline_key else 0

    tasks = [(tier(d.key), "attack", (d, seed)) for d, seed in attack_jobs]
    tasks += [(tier(job[0]), "emotion", job) for job in jobs]
    tasks.sort(key=lambda t: t[0])  # stable: attack before emotion within a tier
    with pool:
        waiting: dict[Future[object], tuple[str, tuple[object, ...]]] = {}
        for _tier, kind, job in tasks:
            if kind == "attack":
                defence, seed = job
                # the masking changes the sums only by quantisation: seed 0 of secagg and the headline epsilon run it
                # (round time, bytes), the other attack federations give the same sums without it, for time
                masked = seed == 0 and (defence.name == "secagg" or defence.key == plan.headline_key)
                future = pool.submit(run_attack, base_json, genders, defence, seed, plan.attack_rounds, clip, folds, masked)
            else:
                _key, overrides, fold, seed, parts = job
                future = pool.submit(emotion_run, base_json, overrides, fold, plan.folds, seed, plan.rounds, parts)
            waiting[future] = (kind, job)  # type: ignore[index]
        while waiting:
            done, _ = wait(list(waiting), return_when=FIRST_COMPLETED)
            for future in done:
                kind, job = waiting.pop(future)
                if future.exception() is not None:  # one failed row is reported, the others still run
                    label = f"{job[0].key} seed {job[1]}" if kind == "attack" else f"{job[0]} fold {job[2]} seed {job[3]}"  # type: ignore[attr-defined]
                    failed.append(f"{kind} {label}: {future.exception()!r}")
                    print(f"  FAILED {failed[-1]}", flush=True)
                    save(True)
                    continue
                if kind == "attack":
                    take(future.result()[0])  # type: ignore[index]
                    continue
                key, _o, fold, seed, _p = job
                record: dict[str, object] = future.result()  # type: ignore[assignment]
                emotion.setdefault(str(key), []).append(record)
                print(f"  fold {fold} seed {seed} {key!s:26s} emotion UAR {100 * float(record['uar']):5.1f}  "  # type: ignore[arg-type]
                      f"epsilon {_eps(record['epsilon'])}  {record['clients']} clients  ({record['wall_s']:.0f} s)", flush=True)  # type: ignore[arg-type]
                save(True)
    save(False)
    report(args, argv, facts, wall_before + time.perf_counter() - started, attack, emotion, plan, clip, folds,
           partial=False, failed=failed)


def _cost(emotion: dict[str, list[dict[str, object]]], key: str, baseline: str = "none") -> tuple[float, float, float]:
    """Paired emotion-UAR cost in points (baseline - defence, same fold and seed) with its fold-clustered 95% CI."""
    ours = {(r["fold"], r["seed"]): float(r["uar"]) for r in emotion.get(key, [])}  # type: ignore[arg-type]
    theirs = {(r["fold"], r["seed"]): float(r["uar"]) for r in emotion.get(baseline, [])}  # type: ignore[arg-type]
    by_fold: dict[object, list[float]] = {}
    for pair in sorted(set(ours) & set(theirs), key=str):
        by_fold.setdefault(pair[0], []).append(100 * (theirs[pair] - ours[pair]))
    if not by_fold:
        return float("nan"), float("nan"), float("nan")
    return paired_difference([statistics.fmean(v) for v in by_fold.values()])


def _cost_text(cost: tuple[float, float, float], pairs: int) -> str:
    if math.isnan(cost[0]):
        return "—"
    ci = "" if math.isnan(cost[1]) else f" [{cost[1]:+.1f}, {cost[2]:+.1f}]"
    return f"{cost[0]:+.1f}{ci} ({pairs} pairs)"


def _pairs(emotion: dict[str, list[dict[str, object]]], key: str, baseline: str = "none") -> int:
    mine = {(r["fold"], r["seed"]) for r in emotion.get(key, [])}
    return len(mine & {(r["fold"], r["seed"]) for r in emotion.get(baseline, [])})


def report(args: argparse.Namespace, argv: list[str] | None, facts: dict[str, str], wall: float,
           attack: list[dict[str, object]], emotion: dict[str, list[dict[str, object]]], plan: Plan, clip: float,
           folds: list[tuple[str, str]], partial: bool, failed: list[str]) -> None:
    def rows_of(key: str) -> list[dict[str, object]]:
        return [a for a in attack if a["defence"] == key]

    def per_client(key: str, column: str) -> list[float]:
        return [float(a[column]["per_client"]) for a in rows_of(key) if column in a]  # type: ignore[index]

    def calls(key: str, column: str) -> list[tuple[str, int, int]]:
        return [tuple(c) for a in rows_of(key) if column in a for c in a[column]["calls"]]  # type: ignore[index,misc]

    def headline(key: str, column: str) -> float:
        values = per_client(key, column)
        return statistics.fmean(values) if values else float("nan")

    def attack_cells(key: str, attacker: str) -> list[str]:
        column = f"{attacker}/first layer/selected"
        ran = rows_of(key)
        mine = [a for a in ran if column in a]
        if not mine:
            return ["(not run)" if not ran else "(every round's sum non-finite: the model diverged)"] + ["—"] * 7
        low, high = speaker_bootstrap(calls(key, column))
        per_update = [u for a in mine for u in a[column]["per_update"]]  # type: ignore[index]
        folds_mean = [statistics.fmean(a[column]["per_update"][i] for a in mine) for i in range(len(folds))]  # type: ignore[index]
        chosen = [c for a in mine for c in a[column]["chosen"]]  # type: ignore[index]
        return [f"{headline(key, column):.2f} [{low:.2f}, {high:.2f}]",
                ", ".join(str(a[column]["right"]) for a in mine),  # type: ignore[index]
                " / ".join(_mean_sd(per_client(key, f"{attacker}/first layer/{n}")) for n in CANDIDATES),
                f"{chosen.count('mlp')}/{len(chosen)}",
                _mean_sd(per_update), f"{min(folds_mean):.2f}–{max(folds_mean):.2f}",
                _mean_sd(per_client(key, f"{attacker}/all layers/selected")),
                str(len(mine)) + ("" if all("finite_rounds" not in a for a in ran) else
                                  " (finite sums: " + ", ".join(str(a.get("finite_rounds")) for a in ran) + " rounds)")]

    none_rows = rows_of("none")
    base_round_s = statistics.fmean(float(a["round_s"]) for a in none_rows) if none_rows else float("nan")  # type: ignore[arg-type]
    table_rows = []
    for defence in plan.defences:
        key = defence.key
        attackers = [("computed", "each update"), ("received", "each update")] if defence.name == "none" \
            else [("sums", "round sums (unmixed)")]
        uars = [float(r["uar"]) for r in emotion.get(key, [])]  # type: ignore[arg-type]
        diverged = sum(1 for r in emotion.get(key, []) if r.get("finite") is False)
        mine = rows_of(key)
        masked = [a for a in mine if a.get("masked", True)]
        eps = mine[0]["epsilon"] if mine else (emotion[key][0]["epsilon"] if emotion.get(key) else None)
        z = mine[0]["noise_multiplier"] if mine else None
        for attacker, attacked in attackers:
            computed = int(mine[0].get("computed_updates", 0)) if mine else 0  # type: ignore[call-overload]
            trained_on = {"computed": f"its own shadow updates, on every round's model ({computed} over all speakers)",
                          "received": "the shadow clients' updates it received",
                          "sums": "the shadow clients' estimates"}[attacker]
            table_rows.append([
                key, attacked, trained_on, *attack_cells(key, attacker),
                _mean_sd(uars, 100, 1) + (f" ({diverged} of {len(uars)} models non-finite at the end)" if diverged else ""),
                "—" if defence.name == "none" else _cost_text(_cost(emotion, key), _pairs(emotion, key)),
                _eps(eps), "—" if z is None else f"{z:.3g}",
                f"{statistics.fmean(float(a['round_s']) for a in masked) / base_round_s:.2f}×"  # type: ignore[arg-type]
                if masked else "— (run unmasked)" if mine else "—",
                f"{int(masked[0]['bytes_per_client']) / 1e6:.2f} MB" if masked else "—"])  # type: ignore[call-overload]
    header = ["defence", "attacked", "attack trained on", "attack UAR per client [speaker bootstrap 95%]",
              "speakers right (per seed)", "per client, MLP / logreg", "MLP chosen (folds)", "per update",
              "fold range (per update)", "all layers per client", "attack seeds", "emotion UAR %",
              "emotion cost, points [fold-clustered 95% CI]", "epsilon", "z", "round time vs none",
              "bytes sent per client per round"]
    table = markdown_table(header, table_rows)
    pop_rows = []
    for parts in plan.population:
        none_key, dp_key = population_keys(plan, parts)
        if emotion.get(none_key) and emotion.get(dp_key):
            pop_rows.append([4 * parts, emotion[dp_key][0]["clients"],
                             _mean_sd([float(r["uar"]) for r in emotion[none_key]], 100, 1),  # type: ignore[arg-type]
                             _mean_sd([float(r["uar"]) for r in emotion[dp_key]], 100, 1),  # type: ignore[arg-type]
                             _cost_text(_cost(emotion, dp_key, none_key), _pairs(emotion, dp_key, none_key)),
                             _eps(emotion[dp_key][0]["epsilon"])])  # type: ignore[arg-type]
    pop_table = markdown_table(["shards per training speaker", "clients", "FedAvg UAR %",
                                f"secagg+dp ε={_eps(plan.headline_epsilon)}, C adaptive (median) UAR %",
                                "cost, points [fold-clustered 95% CI]", "epsilon"], pop_rows) if pop_rows else ""
    print()
    print(table)
    if pop_table:
        print()
        print(pop_table)
    status = ("**PARTIAL: the run was stopped before every row completed; rows marked (not run) or missing did not "
              "finish.**\n\n" if partial else "")
    body = (f"{status}Attack: {len(folds)} folds (each holds out one female and one male speaker; the other speakers are "
            f"the attacker's shadow speakers), {plan.seeds} seeds ({plan.seeds_of(Defence('secagg+dp', -1.0), attack=True)} for "
            f"epsilons other than {_eps(plan.headline_epsilon)}), {plan.attack_rounds} rounds of FedAvg over every speaker's 4 shards, fraction "
            f"0.2. The classifier (MLP or logistic regression) is chosen per fold on the shadow speakers alone "
            f"({INNER_PAIRS} inner (female, male) shadow pairs held out in turn, mean per-update UAR); the test speakers' "
            f"score never chose anything. Seed 0 of secagg and of the headline epsilon ran the SecAgg+ masking (round time, "
            f"bytes); the other attack federations under a defence give the same sums without it (equal up to quantisation). "
            f"Emotion UAR (DESIGN §6): {plan.emotion_folds} of {plan.folds} speaker folds x "
            f"{plan.seeds} seeds, {plan.rounds} rounds, test UAR at the best validation round of the last 40%; the cost is "
            f"FedAvg minus the defence, paired by fold and seed, with a fold-clustered 95% CI; secagg runs the masking, "
            f"secagg+dp the same distributed DP without it. Clip norm C = {clip:.4g}. "
            f"Total wall time {wall / 60:.1f} min.\n\n{table}\n")
    if failed:
        body += "\nRows that failed (reported, not retried):\n\n" + "\n".join(f"- {f}" for f in failed) + "\n"
    if pop_table:
        body += ("\n## Population (each training speaker's clips split into more client shards; fraction 0.2 of them "
                 "per round)\n\n" + pop_table + "\n")
    command = " ".join(["python", "benchmarks/privacy.py", *(sys.argv[1:] if argv is None else argv)])
    path = write_results("privacy", f"Attribute inference and its defences on {args.corpus.name} ({args.feature})",
                         command, facts, body, args.out)
    print(f"\nwrote {path}")
    key = plan.headline_key
    eps = next((a["epsilon"] for a in attack if a["defence"] == key), None)
    print(f"attack_uar[none] = {headline('none', 'computed/first layer/selected'):.2f}")
    print(f"attack_uar[secagg] = {headline('secagg', 'sums/first layer/selected'):.2f}")
    print(f"attack_uar[secagg+dp] = {headline(key, 'sums/first layer/selected'):.2f} (epsilon {_eps(eps)})")  # type: ignore[arg-type]
    print(f"emotion_uar_cost[secagg] = {_cost(emotion, 'secagg')[0]:.2f}")
    print(f"emotion_uar_cost[secagg+dp] = {_cost(emotion, key)[0]:.2f}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except FedserError as exc:
        print(f"privacy.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
