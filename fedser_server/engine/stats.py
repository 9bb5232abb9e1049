"""A consistent snapshot of a running coordinator, taken under its lock, for status and Prometheus."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunStats:
    completed_round: int
    rounds_planned: int
    history: tuple[dict[str, object], ...]  # the metrics.jsonl records of this process, oldest first
    clients_registered: int
    clients_alive: int
    clients_left: int
    waiting_for_clients: bool | None = None
    run_finished: bool | None = None
    refusals: dict[str, int] | None = None  # refused updates by reason; None: count from the records
    request_refusals: dict[tuple[str, str], int] | None = None  # other refused calls by (rpc, reason)
    bytes_sent: int | None = None
    bytes_received: int | None = None
    class_names: tuple[str, ...] = field(default_factory=tuple)


def stats_of(observable: Any) -> RunStats:
    """A snapshot of anything shaped like a coordinator: its own `stats()` when it has one (under its
    lock); otherwise its public attributes, read as they are (e.g. a stand-in in a test)."""
    if hasattr(observable, "stats"):
        own: RunStats = observable.stats()
        return own
    clients = list(observable.registry.clients.values())
    done = getattr(observable, "done", None)
    refusals = getattr(observable, "refusals", None)
    requests = getattr(observable, "request_refusals", None)
    return RunStats(
        completed_round=observable.completed_round, rounds_planned=observable.config.federation.rounds,
        history=tuple(observable.history), clients_registered=len(clients), clients_alive=len(observable.alive_clients()),
        clients_left=sum(1 for c in clients if c.left), waiting_for_clients=getattr(observable, "waiting_for_clients", None),
        run_finished=done.is_set() if done is not None else None,
        refusals=dict(refusals) if refusals is not None else None,
        request_refusals=dict(requests) if requests is not None else None,
        bytes_sent=getattr(observable, "bytes_sent", None), bytes_received=getattr(observable, "bytes_received", None),
        class_names=tuple(observable.config.labels.class_names))
