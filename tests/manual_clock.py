"""A clock that moves only when the test moves it: time-driven behaviour (round deadlines, retries,
client expiry) without real-time deadlines that a loaded machine can miss."""

from __future__ import annotations

import threading


class ManualClock:
    """A monotonic clock for `fedser_server.app.start(clock=...)`: the server's waits re-read it at
    least every `fedser_server.clock.WAKE_S` real seconds, so a jump is seen within that."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
