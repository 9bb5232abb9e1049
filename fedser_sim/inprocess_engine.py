"""The `inprocess` engine: the same Strategy and LocalTrainer objects in one loop, no gRPC.

Same seeds, same sample, same local training as the `grpc` engine, so both reach the same
global weights; only the arrival order of updates differs, which the float64 running sum
makes immaterial at float32 precision.

`federate` is the pure round loop (values in, states out); `run_inprocess` adds what the
server would do around it: client evaluation, `metrics.jsonl`, the saved global state.
The accuracy benchmark drives `federate` directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fedser_client.core.data import ClientData
from fedser_client.core.state import LocalState
from fedser_client.core.trainer import LocalTrainer, TrainReport, TrainTask, stable_seed
from fedser_server.core.records import EvalTally, RoundTally, is_eval_round, metrics_record
from fedser_server.core.round_plan import plan_round
from fedser_server.core.schedule import is_trainable
from fedser_server.core.strategy import State, make_strategy
from fedser_server.state.store import StateStore
from fedser_shared.config import RunConfig
from fedser_shared.secagg import SecureRound
from fedser_shared.train_metrics import TrainMetrics
from fedser_shared.weights import initial_weights
from fedser_sim.secure_round import Contribution, aggregate_securely

if TYPE_CHECKING:  # the feature pipeline is not needed to run rounds on ready features
    from fedser_client.prepare import PreparedData


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
    secure: SecureRound | None = None  # the secure round's survivors and traffic, under secure aggregation
    reports: dict[str, TrainReport] = field(default_factory=dict)  # each sampled client's, by name


def make_clients(config: RunConfig, datas: Mapping[str, ClientData], device: str = "cpu") -> dict[str, SimClient]:
    return {name: SimClient(name, LocalTrainer(config, data, stable_seed(name), device), LocalState(), len(data.y_eval))
            for name, data in datas.items()}


def federate(config: RunConfig, clients: Mapping[str, SimClient], feature_dim: int) -> Iterator[RoundResult]:
    """Run `config.federation.rounds` rounds; yield the new global state after each."""
    fed = config.federation
    strategy = make_strategy(fed.algorithm, fed.server_lr, fed.c_update)
    state = strategy.initial_state(initial_weights(feature_dim, config.num_classes, config.model.hidden, fed.seed))
    trainable = [c for c in clients.values() if c.trainable]
    for round_index in range(1, fed.rounds + 1):
        started = time.perf_counter()
        plan = plan_round(config, [c.name for c in trainable], round_index)
        names = plan.sampled
        strategy.begin_round(state, len(trainable))
        task = TrainTask(round=round_index, lr=plan.spec.lr, local_epochs=plan.spec.local_epochs,
                         pseudo_threshold=plan.spec.pseudo_threshold)
        tally = RoundTally(n_sampled=len(names))
        contributions: dict[str, Contribution] = {}
        reports: dict[str, TrainReport] = {}
        for name in names:
            client = clients[name]
            update, new_state, report = client.trainer.train(state, task, client.state)
            client.state = new_state
            reports[name] = report
            metrics = TrainMetrics.of_report(report)
            if config.privacy.secure:  # every sampled client takes part; an empty one adds zero weight
                contributions[name] = Contribution(update, metrics.n_samples)
                continue  # the server sees no client's metrics: only the masked vector leaves
            if not metrics.empty:  # an empty participation is counted, not aggregated, as by the server
                strategy.accumulate(update, metrics.n_samples)
            tally.add_update(metrics, config.num_classes)
        secure = None
        if config.privacy.secure:
            secure = aggregate_securely(strategy, state, contributions, config.privacy, fed.seed, round_index)
            tally.n_updates = len(secure.result.survivors)  # what the gRPC server records of a secure round
            tally.n_empty = len(secure.result.survivors) - strategy.n_updates
        tally.seconds = time.perf_counter() - started
        state = strategy.finish_round()
        yield RoundResult(round_index, state, tally, secure, reports)


def run_inprocess(
    config: RunConfig, prepared: dict[str, PreparedData], state_dir: Path,
    on_round: Callable[[dict[str, object]], None] | None = None, device: str = "cpu",
) -> tuple[State, list[dict[str, object]]]:
    store = StateStore(state_dir)
    store.metrics_path.unlink(missing_ok=True)
    clients = make_clients(config, {name: p.data for name, p in prepared.items()}, device)
    history: list[dict[str, object]] = []
    state: State = {}
    for result in federate(config, clients, config.feature_dim):
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
        store.append_metrics(record)
        history.append(record)
        if on_round:
            on_round(record)
    return state, history
