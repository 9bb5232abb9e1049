"""Admission control: how many calls of each long-lived kind the server holds at once.

A parked `GetTask` long-poll is a coroutine on the server's event loop (a few KB, no thread);
a `SubmitUpdate` stream holds a worker thread and receive buffers. Without bounds N concurrent
uploads hold N full-size receive buffers. So:

- `PollGate`: at most `parked_polls` long-polls wait on the coordinator (default 50,000, far
  above any fleet this server has run); beyond that a poll is answered at once (its task if it
  has one, else WAIT with a jittered `retry_after_s` that grows with the number of joined clients).
- `UploadGate`: at most `uploads` updates are received, validated and aggregated at once, so
  peak memory does not grow with the number of clients. An upload that finds every slot taken
  is refused at once with a time to come back (`upload_slots_busy`): a stream parked until a
  slot frees keeps grpc's buffers in the server's heap while it waits (~160 MB at 1,000
  clients, benchmarks/results/server_memory.md).
- `HeaderGate`: an update stream holds no thread until its header (which authenticates it) is
  in; at most `unauthenticated_streams` streams wait for theirs at once, each at most
  `header_timeout_s` of the run's clock. Beyond the bound a stream is refused at once
  (`unauthenticated_streams`), past the limit it is cut off (`header_timeout`): streams that never
  send a header cannot tie up the workers that joins, evaluations and real uploads need.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from fedser_server.clock import WAKE_S, Clock
from fedser_shared.config import AdmissionConfig
from fedser_shared.errors import HeaderTimeoutError, TooManyUnauthenticatedError, UploadSlotsBusyError

__all__ = ["HeaderGate", "Limits", "PollGate", "UploadGate", "UploadSlot", "UploadSlotsBusyError"]
T = TypeVar("T")
FIRST_HOLD_GUESS_S = 0.5  # until an upload has been timed
HOLD_AVERAGE_WEIGHT = 0.2
MAX_RETRY_AFTER_S = 60.0  # a turn further out is handed out as this (the client comes back and asks again)
TURNS_KEPT = 10_000  # past this many refused clients on record, those whose turn is long past are forgotten

# the limits are settings of the run's configuration (`[admission]`), validated with it
Limits = AdmissionConfig


class PollGate:
    def __init__(self, capacity: int, rng: random.Random | None = None) -> None:
        self.capacity = capacity
        self._parked = 0
        self._lock = threading.Lock()
        self._rng = rng or random.Random()

    @property
    def parked(self) -> int:
        return self._parked

    def try_park(self) -> bool:
        """Whether this poll may wait (True: call `unpark` when it ends) or must be answered at once."""
        with self._lock:
            parked = self._parked < self.capacity
            self._parked += parked
        return parked

    def unpark(self) -> None:
        with self._lock:
            self._parked -= 1

    def retry_after_s(self, n_joined: int, ceiling_s: float) -> float:
        """Spread the pollers the pool cannot park: about one poll window per `capacity` clients."""
        load = max(1.0, n_joined / max(1, self.capacity))  # parked_polls = 0 parks none
        return self._rng.uniform(0.5, 1.5) * min(ceiling_s, load)


class UploadGate:
    """Upload slots, taken without waiting. The times handed to refused uploads form a virtual
    queue: a newly refused upload gets the next turn, one average slot hold per slot after the
    turn before it, so that refused clients come back spread out, about when a slot is free for
    them. An upload that comes back before its turn keeps it (a client that ignores the times
    does not push everyone else's out); one whose turn came and found the slots taken gets the
    next turn at the back. (Turns handed out again "soon" instead made the due clients poll:
    1,000 x 64 MB, 7,499 + 19,146 refusals and 520 s against 2,240 + 5,432 and 381 s.)"""

    def __init__(self, active: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.active = active
        self._free = active
        self._lock = threading.Lock()
        self._clock = clock  # real time: slot holds are about throughput, not the run's clock
        self._hold_s = FIRST_HOLD_GUESS_S  # moving average of how long an upload holds its slot
        self._next_turn = 0.0
        self._turns: dict[str, float] = {}  # who was refused -> the turn handed out

    def take(self, who: str) -> UploadSlot:
        """A slot for `who` (a client), or `UploadSlotsBusyError` with the time to come back."""
        with self._lock:
            now = self._clock()
            turn = self._turns.pop(who, None)
            if self._free:
                self._free -= 1
                return UploadSlot(self, now)
            if turn is None or turn <= now:
                self._next_turn = turn = max(self._next_turn, now) + self._hold_s / self.active
                if len(self._turns) >= TURNS_KEPT:
                    self._forget_turns_before(now - MAX_RETRY_AFTER_S)
            self._turns[who] = turn
            wait_s = min(turn - now, MAX_RETRY_AFTER_S)
        raise UploadSlotsBusyError(f"all {self.active} upload slots are taken: send the update again in {wait_s:.2f} s",
                                   retry_after_s=wait_s)

    def _forget_turns_before(self, when: float) -> None:
        """Drop the turns of clients that did not come back (their round ended, they left)."""
        self._turns = {who: turn for who, turn in self._turns.items() if turn >= when}

    def _give_back(self, taken_at: float) -> None:
        with self._lock:
            self._free += 1
            self._hold_s += HOLD_AVERAGE_WEIGHT * (max(0.0, self._clock() - taken_at) - self._hold_s)


class UploadSlot:
    """One taken slot; leaving its block (or `release`) gives it back, once."""

    def __init__(self, gate: UploadGate, taken_at: float) -> None:
        self._gate, self._taken_at = gate, taken_at
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._gate._give_back(self._taken_at)

    def __enter__(self) -> UploadSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class HeaderGate:
    """Update streams waiting on the event loop for their first message (the header)."""

    def __init__(self, capacity: int, timeout_s: float, clock: Clock = time.monotonic) -> None:
        self.capacity, self.timeout_s, self._clock = capacity, timeout_s, clock
        self.waiting = 0  # touched only on the event loop

    async def first_message(self, requests: AsyncIterator[T]) -> T | None:
        """The stream's first message (None if it ended without one), or the refusal that says why not."""
        if self.waiting >= self.capacity:
            raise TooManyUnauthenticatedError(f"{self.waiting} update streams already wait for their header: retry later")
        self.waiting += 1
        reading = asyncio.ensure_future(anext(requests, None))
        try:
            deadline = self._clock() + self.timeout_s
            while not reading.done():
                left = deadline - self._clock()
                if left <= 0:
                    raise HeaderTimeoutError(f"no update header within {self.timeout_s:g} s of opening the stream")
                await asyncio.wait((reading,), timeout=min(left, WAKE_S))
            return reading.result()
        finally:
            reading.cancel()  # nothing when it is done
            self.waiting -= 1
