"""Parked GetTask polls hear their client's task, whatever happened to the client's other polls."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from fedser_server.core.round_book import TaskAssignment, TaskKind
from fedser_server.transport.long_poll import TaskPolls

TRAIN = TaskAssignment(TaskKind.TRAIN, round=1, task_id="t1")


class PostingCoordinator:
    """The coordinator as the polls see it: WAIT until a task is posted for the client."""

    client_timeout_s = 3600.0

    def __init__(self) -> None:
        self.posted: set[str] = set()
        self.listeners: list = []

    def add_task_listener(self, listener) -> None:
        self.listeners.append(listener)

    def next_task(self, client) -> TaskAssignment:
        return TRAIN if client.client_id in self.posted else TaskAssignment(TaskKind.WAIT)

    def post(self, client_id: str) -> None:
        self.posted.add(client_id)
        for listener in self.listeners:
            listener((client_id,))


def _parked_polls() -> tuple[PostingCoordinator, TaskPolls]:
    """A coordinator that posts tasks by hand, and the long polls parked on it (inside a running loop)."""
    coordinator = PostingCoordinator()
    return coordinator, TaskPolls(coordinator, asyncio.get_running_loop())  # type: ignore[arg-type]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_poll_gets_the_task_posted_while_it_was_parked() -> None:
    async def scenario() -> TaskAssignment:
        coordinator, polls = _parked_polls()
        client = SimpleNamespace(client_id="c1")
        poll = asyncio.create_task(polls.next_task(client, 30.0))  # type: ignore[arg-type]
        await _settle()
        assert not poll.done()
        coordinator.post("c1")
        return await asyncio.wait_for(poll, 10)

    assert asyncio.run(scenario()) == TRAIN


def test_a_cancelled_poll_does_not_end_the_same_clients_other_parked_poll() -> None:
    """A client that gave up on a poll (its call was cancelled) and polled again hears its task."""
    async def scenario() -> TaskAssignment:
        coordinator, polls = _parked_polls()
        client = SimpleNamespace(client_id="c1")
        abandoned = asyncio.create_task(polls.next_task(client, 30.0))  # type: ignore[arg-type]
        await _settle()
        current = asyncio.create_task(polls.next_task(client, 30.0))  # type: ignore[arg-type]
        await _settle()
        abandoned.cancel()
        await _settle()
        assert abandoned.cancelled() and not current.done()
        coordinator.post("c1")
        return await asyncio.wait_for(current, 10)

    assert asyncio.run(scenario()) == TRAIN


def test_a_parked_poll_answers_wait_when_its_time_is_up() -> None:
    async def scenario() -> TaskAssignment:
        _, polls = _parked_polls()
        return await asyncio.wait_for(polls.next_task(SimpleNamespace(client_id="c1"), 0.05), 10)  # type: ignore[arg-type]

    assert asyncio.run(scenario()).kind is TaskKind.WAIT
