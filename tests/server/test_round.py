"""A round: the tasks it hands out, the answers it takes, and its new state made in one place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedser_server.core.reports import UpdateHeader
from fedser_server.core.round_book import RoundBook, TaskKind
from fedser_server.core.round_plan import TaskSpec
from fedser_server.core.strategy import Scaffold, aggregate
from fedser_server.engine.aggregator import Aggregator
from fedser_server.engine.round import Round, SummedUpdates
from fedser_server.engine.served_state import InMemoryState
from fedser_server.engine.sums import WeightedSums
from fedser_shared import codec
from fedser_shared.errors import NotParticipatingError, StaleRoundError
from fedser_shared.train_metrics import TrainMetrics
from tests.server.test_aggregation import _checked

STRATEGY = Scaffold(server_lr=1.0, c_update="paper")
STATE = STRATEGY.initial_state({"w.a": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4), "w.b": np.ones(3, np.float32)})
SPEC = TaskSpec(round=4, lr=0.1, local_epochs=1, pseudo_threshold=0.0)


def _training_round(aggregator: Aggregator, clients: list[str]) -> Round:
    ids = iter(f"task-{i}" for i in range(100))
    book = RoundBook.post(TaskKind.TRAIN, SPEC, {c: 0 for c in clients}, 0.0, lambda: next(ids))
    return Round(book, num_classes=4, collection=SummedUpdates(WeightedSums(STRATEGY, STATE, 5), aggregator))


def _header(current: Round, client: str, n_samples: int) -> UpdateHeader:
    task = current.owed(client)
    assert task is not None
    return UpdateHeader(round=task.round, task_id=task.task_id, total_len=1, metrics=TrainMetrics(n_samples))


def test_the_new_state_is_the_strategy_rule_over_the_accepted_updates_only(tmp_path: Path) -> None:
    aggregator = Aggregator()
    try:
        current = _training_round(aggregator, ["a", "b", "c"])
        values = {"a": 0.5, "b": -2.0}
        for client, n_samples in (("a", 3), ("b", 7)):
            header = _header(current, client, n_samples)
            current.offer(client, header.round, header.task_id)
            current.accept(client, header, _checked(tmp_path, STRATEGY, values[client], STATE), 1.0)
        current.accept("c", _header(current, "c", 0), None)  # an empty participation: counted, not aggregated
        assert current.complete and current.tally.n_updates == 3 and current.tally.n_empty == 1
        current.stop_answers()
        with pytest.raises(StaleRoundError):
            current.offer("c", SPEC.round, "task-2")
        state, blob = current.close(InMemoryState(codec.BlobLayout(STATE)))
    finally:
        aggregator.close()
    updates = [({n: np.full(s.shape, values[c], s.dtype) for n, s in STRATEGY.expected_update(STATE).items()}, n)
               for c, n in (("a", 3), ("b", 7))]
    expected = aggregate(STRATEGY, STATE, updates, n_registered=5)
    assert all(state[n].tobytes() == expected[n].tobytes() for n in expected)
    assert codec.decode(blob.data).keys() == expected.keys()


def test_a_round_closes_only_once_its_answers_are_stopped_and_an_evaluation_collects_no_update() -> None:
    aggregator = Aggregator()
    try:
        current = _training_round(aggregator, ["a"])
        with pytest.raises(RuntimeError, match="stopped"):
            current.close(InMemoryState(codec.BlobLayout(STATE)))
        book = RoundBook.post(TaskKind.EVALUATE, SPEC, {"a": 0}, 0.0, lambda: "t")
        evaluation = Round(book, num_classes=4)
        with pytest.raises(NotParticipatingError):
            evaluation.accept("a", UpdateHeader(round=SPEC.round, task_id="t", total_len=1, metrics=TrainMetrics(1)), None)
    finally:
        aggregator.close()
