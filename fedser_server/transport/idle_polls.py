"""Idle polling (`federation.idle_poll_s`): a poll with nothing for its client is answered at once.

A parked long-poll costs the server grpc's per-call state, and the client's open connection
grpc's per-connection state: ~37 KB a joined client together (benchmarks/results/fleet.md),
whatever fedser does. In idle mode a client with no task hears WAIT at once with a come-back
time (`retry_after_s`, jittered so that a fleet that joined together does not poll together);
between polls it holds no call, and fedser's daemon closes its connection. Its session lives on
through the polls themselves (the interval is validated well inside the client timeout).

A client that ignores the come-back time (a client written before the hint, or against an older
reading of the protocol) would turn that into a hot loop. So a client that comes back before half
its time is up has its poll parked as a long-poll instead: it costs what it cost before, no more.
"""

from __future__ import annotations

import random

from fedser_server.clock import Clock
from fedser_shared.config import IDLE_POLL_JITTER


class IdlePolls:
    """The come-back times handed out, per client. Touched only on the server's event loop."""

    def __init__(self, interval_s: float, clock: Clock, rng: random.Random | None = None) -> None:
        self.interval_s = interval_s
        self._clock = clock  # the run's clock
        self._rng = rng or random.Random()
        self._early_before: dict[str, float] = {}  # client_id -> a poll before this time ignored its come-back time

    def answers_at_once(self, client_id: str) -> bool:
        """Whether this client's poll is answered at once (False: it came back early, park it)."""
        early_before = self._early_before.get(client_id)
        return early_before is None or self._clock() >= early_before

    def come_back_in(self, client_id: str) -> float:
        """The come-back time (seconds) to hand this client with its WAIT."""
        wait_s = self.interval_s * self._rng.uniform(*IDLE_POLL_JITTER)
        self._early_before[client_id] = self._clock() + wait_s / 2
        return wait_s
