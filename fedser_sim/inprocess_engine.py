"""The `inprocess` engine: the same Strategy and LocalTrainer objects in one loop, no gRPC.

Same seeds, same sample, same local training as the `grpc` engine, so both reach the same
global weights; only the arrival order of updates differs, which the float64 running sum
makes immaterial at float32 precision.

`federate` is the pure round loop (values in, states out); `run_inprocess` adds what the
server would do around it: client evaluation, `metrics.jsonl`, the saved global state.
The accuracy benchmark drives `federate` directly.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import structlog

from fedser_client.core.data import ClientData
from fedser_client.core.state import LocalState
from fedser_client.core.trainer import LocalTrainer, TrainReport, TrainTask, stable_seed
from fedser_server.core.dp import DpFedAvg, PrivacyBudgetReached, dp_rounds
from fedser_server.core.norm_bound import NormBound, l2_norm
from fedser_server.core.records import EvalTally, RoundTally, is_eval_round, metrics_record
from fedser_server.core.round_plan import plan_round
from fedser_server.core.schedule import is_trainable
from fedser_server.core.strategy import State, Strategy, check_finite, make_strategy
from fedser_server.engine.sums import RecycledSums, WeightedSums
from fedser_server.state.store import StateStore
from fedser_shared.config import RunConfig
from fedser_shared.dp import clip_update, update_norm
from fedser_shared.errors import InvalidUpdateError, NormBoundError
from fedser_shared.secagg import SecureRound
from fedser_shared.tensor_names import DELTA, WEIGHT
from fedser_shared.weights import initial_weights
from fedser_sim.secure_round import Contribution, aggregate_securely

if TYPE_CHECKING:  # the feature pipeline is not needed to run rounds on ready features
    from fedser_client.prepare import PreparedData

log = structlog.get_logger("fedser.sim")


@dataclass
class SimClient:
    name: str
    trainer: LocalTrainer
    state: LocalState
    n_eval: int

    @property
    def trainable(self) -> bool:
        return is_trainable(self.trainer.config, self.trainer.n_labeled, len(self.trainer.data.unlabeled_index))


@dataclass(frozen=True)
class RoundResult:
    round: int
    state: State
    tally: RoundTally
    privacy: dict[str, float | None] | None = None  # epsilon spent so far (None: no noise), z, C (privacy.dp on)
    secure: SecureRound | None = None  # the secure round's survivors and traffic, under secure aggregation
    sampled: tuple[str, ...] = ()  # who took part (the server knows it in every mode)
    reports: dict[str, TrainReport] = field(default_factory=dict)  # each sampled client's, by name


# What the server receives from one client in one round: (round, client name, update as sent, n_samples)
UpdateObserver = Callable[[int, str, Mapping[str, np.ndarray], int], None]


def _strategy(config: RunConfig) -> Strategy:
    fed = config.federation
    if config.privacy.dp_enabled:
        return DpFedAvg(fed.server_lr, np.random.default_rng(stable_seed(fed.seed, "dp-server")))
    return make_strategy(fed.algorithm, fed.server_lr, fed.c_update)


def make_clients(config: RunConfig, datas: Mapping[str, ClientData], device: str = "cpu") -> dict[str, SimClient]:
    return {name: SimClient(name, LocalTrainer(config, data, stable_seed(name), device), LocalState(), len(data.y_eval))
            for name, data in datas.items()}


def federate(config: RunConfig, clients: Mapping[str, SimClient], feature_dim: int,
             observe: UpdateObserver | None = None) -> Iterator[RoundResult]:
    """Run `config.federation.rounds` rounds; yield the new global state after each.

    Under secure aggregation the round's updates reach the strategy only as their SecAgg+ sum. With
    privacy.dp on, each update is clipped and noised where the mode says (docs/privacy.md), every update
    weighs the same, and a configured budget ends the run with PrivacyBudgetReached before the round that
    would exceed it. `observe` sees each update as the server receives it (never under secure aggregation)."""
    fed, privacy = config.federation, config.privacy
    strategy = _strategy(config)
    state = strategy.initial_state(initial_weights(feature_dim, config.num_classes, config.model.hidden, fed.seed))
    trainable = [c for c in clients.values() if c.trainable]
    # the plain update path's norm bounds, as the gRPC server applies them (DP clips on its own)
    bound = NormBound(fed.update_norm_max, fed.update_norm_relative or None, fed.update_norm_action)
    dp = None
    if privacy.dp_enabled:
        sample_size = len(plan_round(config, [c.name for c in trainable], 1).sampled)
        dp = dp_rounds(privacy, fed.rounds, sample_size, len(trainable))
    recycled = RecycledSums()
    for round_index in range(1, fed.rounds + 1):
        if dp is not None:
            dp.check_budget(round_index)
        started = time.perf_counter()
        plan = plan_round(config, [c.name for c in trainable], round_index)
        names = plan.sampled
        sums = WeightedSums(strategy, state, len(trainable), recycled)
        model_norm = l2_norm(state, WEIGHT)  # what the relative norm bound starts from, once per round
        task = TrainTask(round=round_index, lr=plan.spec.lr, local_epochs=plan.spec.local_epochs,
                         pseudo_threshold=plan.spec.pseudo_threshold)
        tally = RoundTally(n_sampled=len(names))
        contributions: dict[str, Contribution] = {}
        norms = []
        reports: dict[str, TrainReport] = {}
        for name in names:
            client = clients[name]
            update, new_state, report = client.trainer.train(state, task, client.state)
            reports[name] = report
            metrics = report.metrics
            if not metrics.empty and not _finite(update, tally):  # as the server refuses it on receipt: before any
                continue                                           # clip or noise, which would carry NaN into the sum
            if dp is not None and not metrics.empty:
                norms.append(update_norm(update))
            if privacy.secure:  # every sampled client takes part; an empty one adds zero weight
                weight = metrics.n_samples
                if dp is not None:  # clipped on the client; under DP every client weighs the same
                    update = clip_update(update, dp.clip_norm)[0]
                    weight = 0 if metrics.empty else privacy.secagg_max_weight
                contributions[name] = Contribution(update, weight)
                client.state = new_state
                continue  # the server sees no client's metrics: only the masked vector leaves
            if not metrics.empty:  # an empty participation is counted, not aggregated, as by the server
                if dp is not None:
                    update = dp.release(update, len(names), _client_rng(fed.seed, name, round_index))[0]
                if observe is not None:
                    observe(round_index, name, update, metrics.n_samples)
                if dp is not None:
                    sums.add(dp.receive(update), metrics.n_samples)
                else:
                    norm = l2_norm(update, DELTA)
                    try:
                        scale = bound.scale(norm, model_norm)
                    except NormBoundError as refused:  # the client keeps its state, as after the server's refusal
                        tally.refused[refused.reason] = tally.refused.get(refused.reason, 0) + 1
                        continue
                    sums.add(update, metrics.n_samples, scale)
                    bound.accepted(norm, scale)
            client.state = new_state
            tally.add_update(metrics, config.num_classes)
        secure = None
        if privacy.secure:
            # distributed DP: each client's share of the noise goes in after its clip, before masking
            noise = dp.client_noise(len(names), functools.partial(_client_rng, fed.seed, round_index=round_index)) \
                if dp is not None else None
            secure = aggregate_securely(strategy, sums, state, contributions, privacy, fed.seed, round_index, noise)
            tally.n_updates = len(secure.result.survivors)  # what the gRPC server records of a secure round
            tally.n_empty = len(secure.result.survivors) - sums.n_updates
        if dp is not None and isinstance(strategy, DpFedAvg):
            strategy.noise_std = dp.sum_noise_std
        state = sums.new_state()
        tally.seconds = time.perf_counter() - started
        privacy_record = None
        if dp is not None:
            privacy_record = dp.record(round_index)
            dp.close(norms, np.random.default_rng(stable_seed(fed.seed, round_index, "dp-clip")))
        yield RoundResult(round_index, state, tally, privacy_record, secure, tuple(names), reports)


def _finite(update: Mapping[str, np.ndarray], tally: RoundTally) -> bool:
    """Whether every tensor of `update` is finite; a refusal is counted in the round's tally otherwise."""
    try:
        for name, values in update.items():
            check_finite(name, values)
    except InvalidUpdateError as refused:
        tally.refused[refused.reason] = tally.refused.get(refused.reason, 0) + 1
        return False
    return True


def _client_rng(seed: int, name: str, round_index: int) -> np.random.Generator:
    return np.random.default_rng(stable_seed(seed, name, round_index, "dp"))


def run_inprocess(
    config: RunConfig, prepared: dict[str, PreparedData], state_dir: Path,
    on_round: Callable[[dict[str, object]], None] | None = None, device: str = "cpu",
    on_stop: Callable[[str], None] | None = None,
) -> tuple[State, list[dict[str, object]]]:
    """Run the federation, saving each round and its metrics; a privacy budget ends it early and cleanly
    (`on_stop` hears the one-line reason)."""
    store = StateStore(state_dir)
    store.metrics_path.unlink(missing_ok=True)
    store.write_stop_reason(None)
    clients = make_clients(config, {name: p.data for name, p in prepared.items()}, device)
    history: list[dict[str, object]] = []
    state: State = {}
    rounds = federate(config, clients, config.feature_dim)

    def stopped(reason: str) -> None:  # kept in the state dir, as the server does: `status` shows it
        store.write_stop_reason(reason)
        if on_stop is not None:
            on_stop(reason)

    while (result := _next_round(rounds, stopped)) is not None:
        started = time.perf_counter()
        state = result.state
        store.save_global(state, result.round)
        evaluation = None
        if is_eval_round(config, result.round):
            evaluation = EvalTally()
            for client in clients.values():
                if client.n_eval:
                    evaluation.add(*client.trainer.evaluate(state))
        record = metrics_record(config, result.round, result.tally, evaluation,
                                result.tally.seconds + time.perf_counter() - started)
        if result.privacy is not None:
            record.update(result.privacy)
        store.append_metrics(record)
        history.append(record)
        if on_round:
            on_round(record)
    return state, history


def _next_round(rounds: Iterator[RoundResult], on_stop: Callable[[str], None] | None) -> RoundResult | None:
    """The next round, or None when the run ends (its last round, or a privacy budget: logged, one line)."""
    try:
        return next(rounds)
    except StopIteration:
        return None
    except PrivacyBudgetReached as stop:
        log.warning("run_stopped", reason=str(stop))
        if on_stop is not None:
            on_stop(str(stop))
        return None
