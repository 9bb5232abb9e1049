"""GetTask long-polls as coroutines on the server's event loop: a parked poll holds no thread.

A poll asks the coordinator without blocking (`next_task(client)`); while the answer is
WAIT it sleeps on the loop until the coordinator posts tasks for its client (a round opens
with it sampled, its session ends) or for everyone (the run ends), then asks again. The
coordinator wakes the loop through `add_task_listener`, from whichever thread posted; a round
wakes its sampled clients' polls, not the 10,000 others.

A parked poll holds what it must and no more (10,000 of them are parked at once): its coroutine,
one future in `_parked` and one timer. The rare wake of everyone (the run ends) walks `_parked`.
"""

from __future__ import annotations

import asyncio

from fedser_server.core.round_book import TaskAssignment, TaskKind
from fedser_server.engine.coordinator import Coordinator
from fedser_server.engine.sessions import Session


class TaskPolls:
    def __init__(self, coordinator: Coordinator, loop: asyncio.AbstractEventLoop) -> None:
        self._coordinator, self._loop = coordinator, loop
        self._parked: dict[str, asyncio.Future[None]] = {}  # client_id -> done when its poll should ask again
        coordinator.add_task_listener(self._announce)

    def _announce(self, client_ids: tuple[str, ...] | None) -> None:
        """From the thread that posted: wake the polls on the loop. Once the server has stopped
        and its loop is closed there is no poll left to wake."""
        try:
            self._loop.call_soon_threadsafe(self._wake, client_ids)
        except RuntimeError:
            if not self._loop.is_closed():
                raise

    def _wake(self, client_ids: tuple[str, ...] | None) -> None:
        if client_ids is None:
            woken, self._parked = self._parked, {}
            for future in woken.values():
                _release(future)
            return
        for client_id in client_ids:
            mine = self._parked.pop(client_id, None)
            if mine is not None:
                _release(mine)

    async def next_task(self, client: Session, timeout_s: float) -> TaskAssignment:
        """This client's task, once it has one; WAIT when `timeout_s` passes first."""
        deadline = self._loop.time() + timeout_s
        mine: asyncio.Future[None] | None = None
        try:
            while True:
                # parked before asking, so that a post in between is not missed
                mine = self._parked.get(client.client_id)
                if mine is None or mine.done():
                    mine = self._parked[client.client_id] = self._loop.create_future()
                task = self._coordinator.next_task(client)
                now = self._loop.time()
                if task.kind is not TaskKind.WAIT or deadline <= now:
                    return task
                # a parked poll counts as a call from its client (as it did on the sync server): wake
                # often enough that a client parked for long is not taken for gone
                timer = self._loop.call_at(min(deadline, now + self._coordinator.client_timeout_s / 4), _release, mine)
                try:
                    await mine
                except asyncio.CancelledError:
                    # a second poll of the same client shares `mine`; its cancel (the call went away)
                    # cancels `mine` too, which for this poll is a wake-up, not its own end
                    task_now = asyncio.current_task()
                    if task_now is None or task_now.cancelling():
                        raise
                finally:
                    timer.cancel()
        finally:
            if mine is not None and self._parked.get(client.client_id) is mine:
                del self._parked[client.client_id]


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
