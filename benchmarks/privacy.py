"""What fedser's server can learn about a speaker from what it receives: the attribute-inference attack of
Feng et al. 2021 (arXiv 2112.13416, usc-sail/fed-ser-leakage) on plain updates, on secure-aggregation sums,
and on sums under distributed DP; with the emotion UAR each defence costs (DESIGN §6 protocol).

    python benchmarks/privacy.py [--corpus ../shared/data/nemo4] [--quick] [--out DIR]

Attack. One federation per seed over every speaker (4 lack1 shards each, FedAvg, fraction 0.2: 8 of 36
shards per round on nemo4), each update recorded as the server receives it. Folds: every (female, male)
pair of speakers is held out once as the private targets; the other speakers are the attacker's shadow
speakers (public data, gender known). The shadow clients take part in the same federation, so the
attacker's training updates come from the same global models (the strongest honest-but-curious server:
it could equally compute them itself from the models it holds). Features: the first layer's change (and
all layers', reported apart), projected on the principal components of all received updates (no labels
used), z-scored; classifiers: a small MLP and logistic regression, trained on shadow updates, scored on the
private speakers' updates (UAR per update) and per client (a speaker's updates' mean probability).

Under secure aggregation (fedser's SecAgg+ run in process, fedser_sim.secure_round) the server learns each
round's sum (the global model's change times the summed weight) and who was sampled. The attack on sums solves
the linear system that overlapping samples give (every difference of sums across rounds whose samples overlap,
at once): per-client mean updates by least squares from the round sums, then the same classifiers on the
shadow clients' estimates. Under secagg + DP each client clips to C and adds N(0, (zC)^2/m) before masking, so
the sum carries N(0, (zC)^2); z from dp-accounting for the target epsilon over the run (q = sampled/clients).
The emotion runs of secagg + DP leave the masking out (the same sum up to quantisation; the masking's own
cost is the secagg row).

A speaker's calls in the 20 folds are not independent (each speaker is held out 4-5 times): the per-client
figure rests on 9 speakers, so its resolution is coarse; the table gives the calls and the spread over seeds.
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
from concurrent.futures import ProcessPoolExecutor
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
from fedser_client.core.trainer import LocalTrainer  # noqa: E402
from fedser_server.core.strategy import FedAvg  # noqa: E402
from fedser_shared.config import RunConfig, load_run_config  # noqa: E402
from fedser_shared.errors import DataError, FedserError  # noqa: E402
from fedser_shared.metrics import uar  # noqa: E402
from fedser_shared.weights import initial_weights  # noqa: E402
from fedser_sim.inprocess_engine import federate, make_clients  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIRST_LAYER = ("delta.hidden.0.weight", "delta.hidden.0.bias")
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


def record_federation(config: RunConfig, shards: dict[str, ClientData], dim: int) -> Recording:
    """Run the federation. Without secure aggregation every update is recorded; with it, each round's sum as the
    server learns it: the global model's change times the summed weight (a DP round weighs every client 1)."""
    recording = Recording()
    secure = config.privacy.secure
    previous = FedAvg().initial_state(initial_weights(dim, config.num_classes, config.model.hidden, config.federation.seed))
    sizes = {name: len(data.y_train) for name, data in shards.items()}
    for result in federate(config, make_clients(config, shards), dim, None if secure else recording.observe):
        recording.round_seconds.append(result.tally.seconds)
        if result.privacy is not None:
            recording.epsilon = result.privacy["dp_epsilon"] if result.privacy["dp_epsilon"] is not None else math.inf
            recording.noise_multiplier = result.privacy["dp_noise_multiplier"]
        if secure:
            change = {"delta." + n[2:]: (result.state[n].astype(np.float64) - previous[n]) / config.federation.server_lr
                      for n in result.state if n.startswith("w.")}
            weight = len(result.sampled) if config.privacy.dp_enabled else sum(sizes[c] for c in result.sampled)
            recording.sums.append((result.sampled, weight * recording.flat(change)))
            assert result.secure is not None
            recording.bytes_sent += [t.sent for t in result.secure.traffic.values()]
        previous = result.state
    return recording


def all_shards(speakers: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int, seed: int) -> dict[str, ClientData]:
    shards: dict[str, ClientData] = {}
    for speaker, (x, y) in speakers.items():
        shards.update(make_shards(x, y, speaker, num_classes, Labels(), True, seed))
    return shards


def project(matrix: np.ndarray, components: int) -> np.ndarray:
    """Scores on the leading principal components (fit on every row: unlabeled, so the attacker may)."""
    centred = (matrix - matrix.mean(axis=0)).astype(np.float32)
    gram = (centred @ centred.T).astype(np.float64)  # rows x rows: the scores without an SVD of the wide matrix
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][: min(components, len(values))]
    return vectors[:, order] * np.sqrt(np.clip(values[order], 0.0, None))


def attack_features(rows: np.ndarray, layout: list[tuple[str, slice]], layers: str) -> np.ndarray:
    """An update's attack features: its bias changes as they are, and the principal-component scores of its
    weight changes (too wide to feed a classifier trained on a few hundred updates)."""
    chosen = [(n, c) for n, c in layout if layers == "all layers" or n in FIRST_LAYER]
    biases = [rows[:, c].astype(np.float32) for n, c in chosen if n.endswith(".bias")]
    weights = np.concatenate([rows[:, c] for n, c in chosen if n.endswith(".weight")], axis=1)
    return np.concatenate([*biases, project(weights, COMPONENTS)], axis=1)


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
    calls: list[tuple[int, int]] = field(default_factory=list)  # (truth, call) per private speaker per fold

    @property
    def per_client(self) -> float:
        truth = np.array([t for t, _ in self.calls])
        return _uar_binary(truth, np.array([c for _, c in self.calls])) if self.calls else float("nan")

    @property
    def right(self) -> str:
        return f"{sum(t == c for t, c in self.calls)}/{len(self.calls)}"


def attack_updates(features: np.ndarray, speaker_of: list[str], genders: dict[str, str],
                   folds: list[tuple[str, str]], seed: int) -> dict[str, AttackScore]:
    """Per-update attack: train on shadow speakers' updates, score the private pair's updates and speakers."""
    label = np.array([1 if genders[s] == "female" else 0 for s in speaker_of])
    speakers_arr = np.array(speaker_of)
    scores: dict[str, AttackScore] = {}
    for name in classifiers(seed):
        scores[name] = AttackScore()
    for pair in folds:
        private = np.isin(speakers_arr, pair)
        for name, model in classifiers(seed).items():
            model.fit(features[~private], label[~private])
            probability = model.predict_proba(features[private])[:, 1]
            scores[name].per_update.append(_uar_binary(label[private], (probability >= 0.5).astype(int)))
            for speaker in pair:
                mine = speakers_arr[private] == speaker
                scores[name].calls.append((int(genders[speaker] == "female"), int(probability[mine].mean() >= 0.5)))
    return scores


def unmix_sums(recording: Recording) -> tuple[list[str], np.ndarray]:
    """Per-client mean updates estimated from round sums alone: least squares over the rounds' memberships
    (the differences of sums across rounds whose samples overlap, all used at once)."""
    clients = sorted({c for sampled, _ in recording.sums for c in sampled})
    column = {c: i for i, c in enumerate(clients)}
    membership = np.zeros((len(recording.sums), len(clients)))
    for row, (sampled, _) in enumerate(recording.sums):
        membership[row, [column[c] for c in sampled]] = 1.0
    sums = np.stack([total for _, total in recording.sums]).astype(np.float32)
    return clients, (np.linalg.pinv(membership).astype(np.float32) @ sums)  # clients x coordinates


def attack_sums(recording: Recording, layers: str, genders: dict[str, str], folds: list[tuple[str, str]],
                seed: int) -> dict[str, AttackScore]:
    clients, estimate = unmix_sums(recording)
    speaker_of = [c.rsplit("-", 1)[0] for c in clients]
    return attack_updates(attack_features(estimate, recording.layout, layers), speaker_of, genders, folds, seed)


def run_attack(base_json: str, genders: dict[str, str], defence: Defence, seed: int, rounds: int, clip: float,
               folds: list[tuple[str, str]]) -> list[dict[str, object]]:
    """One recorded federation and the attack on what the server sees; `none` also yields `secagg` (its sums)."""
    from accuracy import _SPEAKERS

    started = time.perf_counter()
    config = with_overrides(RunConfig.from_json(base_json), {
        "federation.seed": seed, "federation.rounds": rounds, "federation.algorithm": "fedavg",
        "train.eval_fraction": 0.0, **privacy_overrides(defence, clip)})
    shards = all_shards(_SPEAKERS, config.num_classes, seed)
    dim = next(iter(shards.values())).feature_dim
    recording = record_federation(config, shards, dim)
    results = []
    for view in [defence]:
        result: dict[str, object] = {"defence": view.key, "seed": seed, "epsilon": recording.epsilon,
                                     "noise_multiplier": recording.noise_multiplier,
                                     "round_s": statistics.fmean(recording.round_seconds),
                                     "bytes_per_client": statistics.fmean(recording.bytes_sent),
                                     "updates": len(recording.vectors) or len(recording.sums),
                                     "norm_median": float(np.median([np.linalg.norm(v) for v in recording.vectors]))
                                     if recording.vectors else None}
        for layer in ("first layer", "all layers"):
            if view.name == "none":
                features = attack_features(np.stack(recording.vectors), recording.layout, layer)
                scores = attack_updates(features, [c.rsplit("-", 1)[0] for c in recording.clients], genders, folds, seed)
            else:
                scores = attack_sums(recording, layer, genders, folds, seed)
            for name, score in scores.items():
                result[f"{layer}/{name}"] = {"per_update": score.per_update, "per_client": score.per_client,
                                             "calls": score.calls, "right": score.right}
        result["wall_s"] = time.perf_counter() - started
        results.append(result)
    return results


# ---- emotion UAR under each defence (DESIGN §6: speaker folds, validation speakers, the selected round)

def split_further(shards: dict[str, ClientData], parts: int, seed: int) -> dict[str, ClientData]:
    """Each shard cut into `parts` clients of its rows (seeded), to simulate a larger population."""
    if parts <= 1:
        return shards
    out = {}
    for name, data in shards.items():
        rows = np.random.default_rng(abs(hash((seed, name))) % (2**32)).permutation(len(data.y_train))
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
    return {"fold": fold_index, "seed": seed, "uar": best[2], "round": best[1], "epsilon": epsilon,
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
    parser.add_argument("--population-seeds", type=int, default=1, help="seeds of the population sweep")
    parser.add_argument("--curve-seeds", type=int, default=1,
                        help="seeds of the epsilon curve's points other than --headline-epsilon (attack and emotion)")
    parser.add_argument("--population", default=None,
                        help="clients per training shard for the population sweep at the headline epsilon, e.g. 2,4,8 "
                             "(default 2,4,8; none with --quick)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return parser.parse_args(argv)


def _mean_sd(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return "—"
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.fmean(values):.{digits}f} ± {scale * sd:.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # one BLAS thread per process: the classifiers' small products thrash when threads outnumber free cores
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    seeds = args.seeds or (1 if args.quick else 3)
    attack_rounds = args.attack_rounds or (20 if args.quick else 50)
    rounds = args.rounds or (30 if args.quick else 100)
    epsilons = [float(e) for e in (args.epsilons or ("8" if args.quick else "1,4,8,16,64,inf")).split(",")]
    if args.headline_epsilon not in epsilons:
        epsilons.append(args.headline_epsilon)
    population = [int(p) for p in (args.population or ("" if args.quick else "2,4,8")).split(",") if p]
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

    # the attack: undefended first (its median update norm is the default clip norm), then the defences
    defences = [Defence("none"), Defence("secagg"), *(Defence("secagg+dp", e) for e in epsilons)]
    attack: list[dict[str, object]] = []
    print(f"attack: {len(folds)} folds (female, male held out), {seeds} seeds, {attack_rounds} rounds, "
          f"defences {', '.join(d.key for d in defences)}", flush=True)
    base_json = base.to_json()
    pool = ProcessPoolExecutor(max_workers=max(1, args.workers), initializer=_init_worker, initargs=(speakers,))

    def take(results: list[dict[str, object]]) -> None:
        for result in results:
            attack.append(result)
            scores = "; ".join(f"{name} per client {result[f'first layer/{name}']['per_client']:.2f} "  # type: ignore[index]
                               f"({result[f'first layer/{name}']['right']} right), per update "  # type: ignore[index]
                               f"{statistics.fmean(result[f'first layer/{name}']['per_update']):.2f}"  # type: ignore[index]
                               for name in ("mlp", "logreg"))
            print(f"  seed {result['seed']} {result['defence']:14s} {scores}  epsilon {_eps(result['epsilon'])}  "
                  f"({result['wall_s']:.0f} s)", flush=True)

    first_run = pool.submit(run_attack, base_json, genders, Defence("none"), 0, attack_rounds, 1.0, folds)
    take(first_run.result())
    clip = args.clip or float(attack[0]["norm_median"])
    print(f"  clip norm C = {clip:.4g}" + ("" if args.clip else " (median norm of the undefended updates, seed 0)"), flush=True)
    def seeds_of(defence: Defence) -> int:  # the epsilon curve away from the headline takes fewer seeds
        curve = defence.name == "secagg+dp" and defence.epsilon != args.headline_epsilon
        return min(seeds, args.curve_seeds) if curve else seeds

    attack_jobs = [(d, seed) for d in defences for seed in range(seeds_of(d)) if (d.name, seed) != ("none", 0)]
    attack_futures = [pool.submit(run_attack, base_json, genders, d, seed, attack_rounds, clip, folds) for d, seed in attack_jobs]

    # emotion UAR: plain FedAvg (= secagg's) against secagg+dp at each epsilon, same folds and seeds
    emotion_folds = args.emotion_folds or (1 if args.quick else args.folds)
    # secagg through its in-process protocol; secagg+dp as distributed DP without the masking (the same sum up to
    # quantisation: the masking's own cost is the secagg row), to keep the epsilon curve affordable
    settings: list[tuple[str, dict[str, object], int, int]] = [
        ("none", {}, 1, seeds), ("secagg", privacy_overrides(Defence("secagg"), clip), 1, seeds)]
    settings += [(Defence("secagg+dp", e).key, privacy_overrides(Defence("secagg+dp", e), clip, secure=False), 1,
                  seeds_of(Defence("secagg+dp", e))) for e in epsilons]
    for parts in population:
        population_seeds = min(seeds, args.population_seeds)
        settings.append((f"none x{parts}", {}, parts, population_seeds))
        settings.append((f"secagg+dp@{_eps(args.headline_epsilon)} x{parts}",
                         privacy_overrides(Defence("secagg+dp", args.headline_epsilon), clip, secure=False), parts,
                         population_seeds))
    jobs = [(key, overrides, fold, seed, parts) for key, overrides, parts, n_seeds in settings
            for fold in range(emotion_folds) for seed in range(n_seeds)]
    print(f"emotion: {len(jobs)} runs ({emotion_folds} folds, {len(settings)} settings, {rounds} rounds)",
          flush=True)
    emotion: dict[str, list[dict[str, object]]] = {}
    with pool:
        futures = [pool.submit(emotion_run, base_json, overrides, fold, args.folds, seed, rounds, parts)
                   for _key, overrides, fold, seed, parts in jobs]
        for future in attack_futures:
            take(future.result())
        for (key, _o, fold, seed, _p), future in zip(jobs, futures):
            record = future.result()
            emotion.setdefault(key, []).append(record)
            print(f"  fold {fold} seed {seed} {key:22s} emotion UAR {100 * float(record['uar']):5.1f}  "
                  f"epsilon {_eps(record['epsilon'])}  {record['clients']} clients  ({record['wall_s']:.0f} s)", flush=True)

    wall = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "privacy.json").write_text(json.dumps({"attack": attack, "emotion": emotion, "clip": clip}, indent=1))
    report(args, argv, facts, wall, attack, emotion, defences, epsilons, population, clip, seeds, attack_rounds,
           rounds, emotion_folds, folds)


def _cost(emotion: dict[str, list[dict[str, object]]], key: str, baseline: str = "none") -> tuple[float, float, float]:
    """Paired emotion-UAR cost in points (baseline - defence, same fold and seed) with its fold-clustered 95% CI."""
    ours = {(r["fold"], r["seed"]): float(r["uar"]) for r in emotion.get(key, [])}
    theirs = {(r["fold"], r["seed"]): float(r["uar"]) for r in emotion.get(baseline, [])}
    by_fold: dict[object, list[float]] = {}
    for pair in sorted(set(ours) & set(theirs), key=str):
        by_fold.setdefault(pair[0], []).append(100 * (theirs[pair] - ours[pair]))
    if not by_fold:
        return float("nan"), float("nan"), float("nan")
    return paired_difference([statistics.fmean(v) for v in by_fold.values()])


def report(args: argparse.Namespace, argv: list[str] | None, facts: dict[str, str], wall: float,
           attack: list[dict[str, object]], emotion: dict[str, list[dict[str, object]]], defences: list[Defence],
           epsilons: list[float], population: list[int], clip: float, seeds: int, attack_rounds: int, rounds: int,
           emotion_folds: int, folds: list[tuple[str, str]]) -> None:
    def attack_of(key: str, column: str = "first layer/mlp") -> dict[str, float | str]:
        mine = [a for a in attack if a["defence"] == key]
        per_client = [float(a[column]["per_client"]) for a in mine]  # type: ignore[index]
        per_update = [u for a in mine for u in a[column]["per_update"]]  # type: ignore[index]
        folds_mean = [statistics.fmean(a[column]["per_update"][i] for a in mine)  # type: ignore[index]
                      for i in range(len(folds))]
        return {"per_client": statistics.fmean(per_client), "per_client_text": _mean_sd(per_client),
                "per_update": _mean_sd(per_update), "fold_range": f"{min(folds_mean):.2f}–{max(folds_mean):.2f}",
                "right": ", ".join(str(a[column]["right"]) for a in mine)}  # type: ignore[index]

    def strongest(key: str, layers: str = "first layer") -> float:
        """The stronger of the two classifiers chosen before the run (per client, mean over seeds)."""
        return max(float(attack_of(key, f"{layers}/{name}")["per_client"]) for name in ("mlp", "logreg"))

    def both(key: str, field: str, layers: str = "first layer") -> str:
        return " / ".join(str(attack_of(key, f"{layers}/{name}")[field]) for name in ("mlp", "logreg"))

    base_round_s = statistics.fmean(float(a["round_s"]) for a in attack if a["defence"] == "none")
    rows = []
    for defence in defences:
        mine = [a for a in attack if a["defence"] == defence.key]
        plain = defence.name == "none"
        key = defence.key
        uars = [float(r["uar"]) for r in emotion.get(key, [])]
        cost = _cost(emotion, key) if not plain else (float("nan"),) * 3
        eps = mine[0]["epsilon"] if mine else None
        z = mine[0]["noise_multiplier"] if mine else None
        round_ratio = statistics.fmean(float(a["round_s"]) for a in mine) / base_round_s
        rows.append([defence.key, "each update" if plain else "round sums (unmixed)", f"{strongest(defence.key):.2f}",
                     both(defence.key, "per_client_text"), both(defence.key, "right"),
                     both(defence.key, "per_update") if plain else "—", both(defence.key, "fold_range") if plain else "—",
                     both(defence.key, "per_client_text", "all layers"), _mean_sd(uars, 100, 1),
                     f"{cost[0]:+.1f} [{cost[1]:+.1f}, {cost[2]:+.1f}]" if not math.isnan(cost[0]) else "—",
                     _eps(eps), "—" if z is None else f"{z:.3g}",
                     f"{round_ratio:.2f}×",
                     f"{int(mine[0]['bytes_per_client']) / 1e6:.2f} MB"])
    header = ["defence", "attacked", "attack UAR per client (stronger)", "per client, MLP / logreg", "speakers right",
              "per update", "fold range (per update)", "all layers per client", "emotion UAR %",
              "emotion cost, points [95% CI]", "epsilon", "z", "round time vs none", "bytes sent per client per round"]
    table = markdown_table(header, rows)
    pop_rows = []
    for parts in population:
        none_key, dp_key = f"none x{parts}", f"secagg+dp@{_eps(args.headline_epsilon)} x{parts}"
        if none_key in emotion:
            cost = _cost(emotion, dp_key, none_key)
            pop_rows.append([parts, emotion[none_key][0]["clients"], _mean_sd([float(r["uar"]) for r in emotion[none_key]], 100, 1),
                             _mean_sd([float(r["uar"]) for r in emotion[dp_key]], 100, 1), f"{cost[0]:+.1f} [{cost[1]:+.1f}, {cost[2]:+.1f}]",
                             _eps(emotion[dp_key][0]["epsilon"])])
    pop_table = markdown_table(["clients per shard", "clients", "FedAvg UAR %", f"secagg+dp ε={_eps(args.headline_epsilon)} UAR %",
                                "cost, points [95% CI]", "epsilon"], pop_rows) if pop_rows else ""
    print()
    print(table)
    if pop_table:
        print()
        print(pop_table)
    body = (f"Attack: {len(folds)} folds (each holds out one female and one male speaker; the other speakers are the "
            f"attacker's shadow speakers), {seeds} seeds, {attack_rounds} rounds of FedAvg over every speaker's 4 shards, "
            f"fraction 0.2. Emotion UAR (DESIGN §6): {emotion_folds} of {args.folds} speaker folds x {seeds} seeds, "
            f"{rounds} rounds, test UAR at the best validation round of the last 40%; the cost is FedAvg minus the "
            f"defence, paired by fold and seed, with a fold-clustered 95% CI. Clip norm C = {clip:.4g}. "
            f"Total wall time {wall / 60:.1f} min.\n\n{table}\n")
    if pop_table:
        body += f"\n## Population (each training shard split into more clients)\n\n{pop_table}\n"
    path = write_results("privacy", f"Attribute inference and its defences on {args.corpus.name} ({args.feature})",
                         " ".join(["python", "benchmarks/privacy.py", *(sys.argv[1:] if argv is None else argv)]),
                         facts, body, args.out)
    print(f"\nwrote {path}")
    headline_key = Defence("secagg+dp", args.headline_epsilon).key
    eps = next((a["epsilon"] for a in attack if a["defence"] == headline_key), None)
    print(f"attack_uar[none] = {strongest('none'):.2f}")
    print(f"attack_uar[secagg] = {strongest('secagg'):.2f}")
    print(f"attack_uar[secagg+dp] = {strongest(headline_key):.2f} (epsilon {_eps(eps)})")
    print(f"emotion_uar_cost[secagg] = {_cost(emotion, 'secagg')[0]:.2f}")
    print(f"emotion_uar_cost[secagg+dp] = {_cost(emotion, headline_key)[0]:.2f}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except FedserError as exc:
        print(f"privacy.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
