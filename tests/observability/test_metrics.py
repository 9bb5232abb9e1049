"""The Prometheus endpoint: opt-in, scraped over HTTP, values read from the coordinator's state."""

from __future__ import annotations

import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedser_server import app as server_app
from fedser_server.observability.metrics import registry_for, start_metrics_endpoint
from fedser_server.observability.snapshot import read_metrics
from fedser_shared.config import RunConfig, load_run_config
from fedser_shared.errors import ConfigError


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@dataclass
class _Client:
    left: bool = False


@dataclass
class FakeCoordinator:
    """The public surface the collector reads, filled from a real run's metrics.jsonl."""

    config: RunConfig
    history: list[dict[str, object]]
    completed_round: int
    clients: dict[str, _Client]
    refusals: Counter[str] = field(default_factory=Counter)
    bytes_sent: int = 0
    bytes_received: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def registry(self) -> FakeCoordinator:
        return self

    def alive_clients(self) -> list[_Client]:
        return [c for c in self.clients.values() if not c.left]


def test_metrics_follow_the_rounds(sim_state_dir: Path) -> None:
    history = read_metrics(sim_state_dir / "metrics.jsonl")
    config = load_run_config(None, {"semi.enabled": True, "federation.rounds": 3})
    fake = FakeCoordinator(config, history, 3, {"a": _Client(), "b": _Client(), "c": _Client(left=True)},
                           Counter({"unauthenticated": 2, "invalid_argument": 1}), bytes_sent=5_000, bytes_received=4_000)
    fake.done.set()
    endpoint = start_metrics_endpoint(fake, 0, "127.0.0.1")
    try:
        values = scrape(endpoint.port)
    finally:
        endpoint.stop()
    assert values[("fedser_round_completed", ())] == 3
    assert values[("fedser_rounds_completed_total", ())] == 3
    assert values[("fedser_clients_registered", ())] == 3
    assert values[("fedser_clients_alive", ())] == 2
    assert values[("fedser_clients_left", ())] == 1
    assert values[("fedser_run_finished", ())] == 1
    assert values[("fedser_updates_accepted_total", ())] == sum(r["n_updates"] for r in history)
    assert values[("fedser_updates_refused_total", (("reason", "unauthenticated"),))] == 2
    assert values[("fedser_bytes_streamed_total", (("direction", "sent"),))] == 5_000
    assert values[("fedser_round_duration_seconds_count", ())] == 3
    assert values[("fedser_round_duration_seconds_sum", ())] == pytest.approx(sum(r["seconds"] for r in history))
    assert values[("fedser_last_uar", ())] == history[-1]["uar"]
    assert values[("fedser_pseudo_labels_taken_total", (("class_name", "neutral"),))] == 0


def test_refusals_fall_back_to_the_round_records() -> None:
    history = [{"round": 1, "n_updates": 1, "seconds": 1.0, "refused": {"invalid_argument": 2}},
               {"round": 2, "n_updates": 2, "seconds": 1.0, "refused": {"invalid_argument": 1, "permission_denied": 1}}]
    fake = FakeCoordinator(RunConfig(), history, 2, {})
    del fake.refusals
    text = {(s.name, tuple(s.labels.items())): s.value for f in registry_for(fake).collect() for s in f.samples}
    assert text[("fedser_updates_refused_total", (("reason", "invalid_argument"),))] == 3
    assert ("fedser_last_uar", ()) not in text  # no evaluation yet: no made-up value


def test_a_live_server_serves_metrics_on_request(tmp_path: Path) -> None:
    config = load_run_config(None, {"federation.rounds": 7, "federation.min_clients": 1})
    running = server_app.start(config, "127.0.0.1:0", tmp_path / "state", None)
    try:
        endpoint = start_metrics_endpoint(running.coordinator, 0, "127.0.0.1")
        try:
            values = scrape(endpoint.port)
        finally:
            endpoint.stop()
    finally:
        running.shutdown(0)
    assert values[("fedser_rounds_planned", ())] == 7
    assert values[("fedser_round_completed", ())] == 0
    assert values[("fedser_clients_alive", ())] == 0


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    fake = FakeCoordinator(RunConfig(), [], 0, {})
    first = start_metrics_endpoint(fake, 0, "127.0.0.1")
    try:
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{first.port}"):
            start_metrics_endpoint(fake, first.port, "127.0.0.1")
    finally:
        first.stop()
