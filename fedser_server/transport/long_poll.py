"""GetTask long-polls as coroutines on the server's event loop: a parked poll holds no thread.

A poll asks the coordinator without blocking (`next_task(client, 0)`); while the answer is
WAIT it sleeps on the loop until the coordinator posts tasks (a round opens, sessions end, the
run ends), then asks again. The coordinator wakes the loop through `add_task_listener`, from
whichever thread posted.
"""

from __future__ import annotations

import asyncio

from fedser_server.core.round_book import TaskAssignment, TaskKind
from fedser_server.engine.coordinator import Coordinator
from fedser_server.state.registry import ClientRecord


class TaskPolls:
    def __init__(self, coordinator: Coordinator, loop: asyncio.AbstractEventLoop) -> None:
        self._coordinator, self._loop = coordinator, loop
        self._posted = loop.create_future()  # done when tasks are posted; then replaced by a fresh one
        coordinator.add_task_listener(lambda: loop.call_soon_threadsafe(self._wake))

    def _wake(self) -> None:
        posted, self._posted = self._posted, self._loop.create_future()
        posted.set_result(None)

    async def next_task(self, client: ClientRecord, timeout_s: float) -> TaskAssignment:
        """This client's task, once it has one; WAIT when `timeout_s` passes first."""
        deadline = self._loop.time() + timeout_s
        while True:
            posted = self._posted  # taken before asking, so a post in between is not missed
            task = self._coordinator.next_task(client, 0.0)
            remaining = deadline - self._loop.time()
            if task.kind is not TaskKind.WAIT or remaining <= 0:
                return task
            # a parked poll counts as a call from its client (as it did on the sync server): wake
            # often enough that a client parked for long is not taken for gone
            await asyncio.wait((posted,), timeout=min(remaining, self._coordinator.client_timeout_s / 4))
