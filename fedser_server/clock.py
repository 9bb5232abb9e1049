"""The run's time. Round deadlines, client expiry, a full disk's patience and the update-header
limit are read from an injected monotonic `Clock` (`time.monotonic` in a real run; tests move a
`tests.manual_clock.ManualClock` by hand). A wait on it re-reads it at least every `WAKE_S` real
seconds, so that a jump of the injected clock is seen within that."""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]
WAKE_S = 0.5
