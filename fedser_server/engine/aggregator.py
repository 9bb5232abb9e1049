"""Folds checked updates into their round's running sums on a thread of its own, in the order they
were accepted.

An update is acknowledged once it is received and checked; reading it back from disk and adding
it to the running sums happens here, while the next uploads stream in. A round calls `drain()`
before it makes its new state, so it includes every acknowledged update.
"""

from __future__ import annotations

import threading
from collections import deque

from fedser_server.engine.incoming import CheckedUpdate
from fedser_server.engine.sums import WeightedSums
from fedser_shared.errors import StateError
from fedser_shared.logging import get_logger

log = get_logger(__name__)

# checked updates parked on disk waiting to be folded in; beyond this, accepting one waits
MAX_PENDING = 4


class Aggregator:
    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._queue: deque[tuple[CheckedUpdate, WeightedSums, int, float]] = deque()
        self._busy = False
        self._failure: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="fedser-aggregate", daemon=True)
        self._thread.start()

    def wait_for_room(self) -> None:
        with self._cond:
            while len(self._queue) >= self._max_pending and self._failure is None and not self._closed:
                self._cond.wait()

    def add(self, update: CheckedUpdate, into: WeightedSums, n_samples: int, delta_scale: float = 1.0) -> None:
        """Take the update (and its file): it is folded into `into`, then discarded, on this thread."""
        with self._cond:
            self._queue.append((update, into, n_samples, delta_scale))
            self._cond.notify_all()

    def drain(self) -> None:
        """Return once every update added so far is folded in."""
        with self._cond:
            while (self._queue or self._busy) and self._failure is None and not self._closed:
                self._cond.wait()
            if self._failure is not None:
                raise StateError(f"folding an update into the round failed: {self._failure}")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        while self._queue:
            self._queue.popleft()[0].discard()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                update, sums, n_samples, delta_scale = self._queue.popleft()
                self._busy = True
            try:
                sums.add_runs(update.runs(), n_samples, delta_scale)
            except Exception as exc:  # the sums are now partial: the round must not finish
                log.error("aggregation_failed", error=str(exc))
                with self._cond:
                    self._failure = str(exc)
            finally:
                update.discard()
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
