"""Admission control: how many calls of each long-lived kind the server holds at once.

A parked `GetTask` long-poll is a coroutine on the server's event loop (a few KB, no thread);
a `SubmitUpdate` stream holds a worker thread and receive buffers. Without bounds N concurrent
uploads hold N full-size receive buffers. So:

- `PollGate`: at most `parked_polls` long-polls wait on the coordinator (default 50,000, far
  above any fleet this server has run); beyond that a poll is answered at once (its task if it
  has one, else WAIT with a jittered `retry_after_s` that grows with the number of joined clients).
- `UploadGate`: at most `uploads` updates are received, validated and aggregated at once, so
  peak memory does not grow with the number of clients; up to `waiting_uploads` more wait for
  a slot before reading their first chunk (flow control keeps their bytes on the clients);
  beyond that an upload is refused as busy and the client retries.
- `HeaderGate`: an update stream holds no thread until its header (which authenticates it) is
  in; at most `unauthenticated_streams` streams wait for theirs at once, each at most
  `header_timeout_s`. Beyond the bound a stream is refused at once (`unauthenticated_streams`),
  past the limit it is cut off (`header_timeout`): streams that never send a header cannot tie
  up the workers that joins, evaluations and real uploads need.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from fedser_shared.config import AdmissionConfig
from fedser_shared.errors import HeaderTimeoutError, ServerBusyError, TooManyUnauthenticatedError

__all__ = ["HeaderGate", "Limits", "PollGate", "ServerBusyError", "UploadGate"]
T = TypeVar("T")
SLOT_POLL_S = 0.5

# the limits are settings of the run's configuration (`[admission]`), validated with it
Limits = AdmissionConfig


class PollGate:
    def __init__(self, capacity: int, rng: random.Random | None = None) -> None:
        self.capacity = capacity
        self._parked = 0
        self._lock = threading.Lock()
        self._rng = rng or random.Random()

    @contextmanager
    def park(self) -> Iterator[bool]:
        """Yields whether this poll may wait (True) or must be answered at once (False)."""
        with self._lock:
            parked = self._parked < self.capacity
            self._parked += parked
        try:
            yield parked
        finally:
            if parked:
                with self._lock:
                    self._parked -= 1

    def retry_after_s(self, n_joined: int, ceiling_s: float) -> float:
        """Spread the pollers the pool cannot park: about one poll window per `capacity` clients."""
        load = max(1.0, n_joined / self.capacity)
        return self._rng.uniform(0.5, 1.5) * min(ceiling_s, load)


class UploadGate:
    def __init__(self, active: int, waiting: int) -> None:
        self._slots = threading.BoundedSemaphore(active)
        self._lock = threading.Lock()
        self._waiting = 0
        self.max_waiting = waiting

    @contextmanager
    def slot(self, still_wanted: Callable[[], None]) -> Iterator[None]:
        """Hold an upload slot for the block. `still_wanted` is called while waiting and raises
        when the wait is pointless (the round closed, the client went away)."""
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise ServerBusyError(f"{self._waiting} updates already wait to be received: retry later")
            self._waiting += 1
        try:
            while not self._slots.acquire(timeout=SLOT_POLL_S):
                still_wanted()
        finally:
            with self._lock:
                self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()


class HeaderGate:
    """Update streams waiting on the event loop for their first message (the header)."""

    def __init__(self, capacity: int, timeout_s: float) -> None:
        self.capacity, self.timeout_s = capacity, timeout_s
        self.waiting = 0  # touched only on the event loop

    async def first_message(self, requests: AsyncIterator[T]) -> T | None:
        """The stream's first message (None if it ended without one), or the refusal that says why not."""
        if self.waiting >= self.capacity:
            raise TooManyUnauthenticatedError(f"{self.waiting} update streams already wait for their header: retry later")
        self.waiting += 1
        try:
            return await asyncio.wait_for(anext(requests, None), self.timeout_s)
        except TimeoutError:
            raise HeaderTimeoutError(f"no update header within {self.timeout_s:g} s of opening the stream") from None
        finally:
            self.waiting -= 1
