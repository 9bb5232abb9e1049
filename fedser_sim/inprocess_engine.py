"""The `inprocess` engine: the same Strategy and LocalTrainer objects in one loop, no gRPC.

Same seeds, same sample, same local training as the `grpc` engine, so both reach the same
global weights; only the arrival order of updates differs, which the float64 running sum
makes immaterial at float32 precision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedser_client.core.trainer import LocalState, LocalTrainer, TrainTask, stable_seed
from fedser_client.prepare import PreparedData
from fedser_server.core.records import EvalTally, RoundTally, is_eval_round, metrics_record
from fedser_server.core.schedule import local_lr, pseudo_label_threshold, sample_clients, sample_size
from fedser_server.core.strategy import State, make_strategy
from fedser_server.state.store import StateStore
from fedser_shared.config import RunConfig
from fedser_shared.model import build_model, weights_of


@dataclass
class SimClient:
    name: str
    trainer: LocalTrainer
    state: LocalState
    n_eval: int

    @property
    def trainable(self) -> bool:
        return self.trainer.n_labeled > 0 or (self.trainer.config.semi.enabled and len(self.trainer.data.unlabeled_index) > 0)


def run_inprocess(
    config: RunConfig, prepared: dict[str, PreparedData], state_dir: Path,
    on_round: Callable[[dict[str, object]], None] | None = None, device: str = "cpu",
) -> tuple[State, list[dict[str, object]]]:
    store = StateStore(state_dir)
    store.metrics_path.unlink(missing_ok=True)
    fed = config.federation
    clients = {
        name: SimClient(name, LocalTrainer(config, p.data, stable_seed(name), device), LocalState(), len(p.data.y_eval))
        for name, p in prepared.items()
    }
    strategy = make_strategy(fed.algorithm, fed.server_lr, fed.c_update)
    model = build_model(config.feature_dim, config.num_classes, config.model.hidden, config.model.dropout, fed.seed)
    state = strategy.initial_state(weights_of(model))
    trainable = [c for c in clients.values() if c.trainable]
    history: list[dict[str, object]] = []
    for round_index in range(1, fed.rounds + 1):
        started = time.perf_counter()
        names = sample_clients([c.name for c in trainable], sample_size(config, len(trainable)), fed.seed, round_index, 0)
        strategy.begin_round(state, len(trainable))
        task = TrainTask(round=round_index, lr=local_lr(config, round_index - 1), local_epochs=config.train.local_epochs,
                         pseudo_threshold=pseudo_label_threshold(config, round_index - 1))
        tally = RoundTally(n_sampled=len(names))
        for name in names:
            client = clients[name]
            update, client.state, report = client.trainer.train(state, task, client.state)
            strategy.accumulate(update, report.n_samples)
            tally.add_update(report.n_samples, report.loss, report.pseudo_taken_per_class,
                             report.pseudo_correct_per_class, report.pseudo_with_truth, config.num_classes)
        tally.seconds = time.perf_counter() - started
        state = strategy.finish_round()
        store.save_global(state, round_index)
        evaluation = None
        if is_eval_round(config, round_index):
            evaluation = EvalTally()
            for client in clients.values():
                if client.n_eval:
                    evaluation.add(*client.trainer.evaluate(state))
        record = metrics_record(config, round_index, tally, evaluation, time.perf_counter() - started)
        store.append_metrics(record)
        history.append(record)
        if on_round:
            on_round(record)
    return state, history
