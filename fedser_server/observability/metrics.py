"""Prometheus metrics of a live server, from the coordinator's `stats()` snapshot at scrape time.

Nothing in the round engine calls into this module: a custom collector takes one snapshot
(`RunStats`, read under the coordinator's lock) whenever Prometheus scrapes, so the metrics
cost nothing between scrapes and cannot disagree with `metrics.jsonl`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from fedser_server.engine.stats import stats_of
from fedser_shared.errors import ConfigError
from fedser_shared.logging import get_logger

log = get_logger(__name__)


class _Client(Protocol):
    left: bool


class Observable(Protocol):
    """What the collector reads; `fedser_server.engine.coordinator.Coordinator` provides it."""

    completed_round: int
    history: list[dict[str, Any]]

    @property
    def config(self) -> Any: ...

    @property
    def registry(self) -> Any: ...

    def alive_clients(self) -> list[Any]: ...


def _retry(read: Any) -> Any:
    """Iterating a dict another thread resizes may raise; a fresh try sees a consistent view."""
    for _ in range(3):
        try:
            return read()
        except RuntimeError:
            continue
    return read()


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


class CoordinatorCollector(Collector):
    def __init__(self, coordinator: Observable) -> None:
        self._coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        stats = _retry(lambda: stats_of(self._coordinator))
        history = list(stats.history)

        yield GaugeMetricFamily("fedser_round_completed", "Last completed training round.", value=stats.completed_round)
        yield GaugeMetricFamily("fedser_rounds_planned", "Training rounds the run is configured for.", value=stats.rounds_planned)
        yield CounterMetricFamily("fedser_rounds_completed", "Rounds completed since this server process started or resumed.",
                                  value=len(history))
        yield GaugeMetricFamily("fedser_clients_registered", "Clients that ever joined this run.", value=stats.clients_registered)
        yield GaugeMetricFamily("fedser_clients_alive", "Joined clients heard from within the client timeout.", value=stats.clients_alive)
        yield GaugeMetricFamily("fedser_clients_left", "Clients that said goodbye.", value=stats.clients_left)
        if stats.waiting_for_clients is not None:
            yield GaugeMetricFamily("fedser_waiting_for_clients", "1 while the server waits for enough clients to start a round.",
                                    value=int(stats.waiting_for_clients))
        if stats.run_finished is not None:
            yield GaugeMetricFamily("fedser_run_finished", "1 once the last round has finished.", value=int(stats.run_finished))

        yield CounterMetricFamily("fedser_updates_accepted", "Model updates folded into the global model.",
                                  value=sum(int(r.get("n_updates", 0)) for r in history))
        yield self._refusals(stats.refusals, history)
        yield self._request_refusals(stats.request_refusals, history)
        yield CounterMetricFamily("fedser_evaluations", "Evaluation rounds completed.",
                                  value=sum(1 for r in history if "n_eval_clients" in r))

        if stats.bytes_sent is not None and stats.bytes_received is not None:
            streamed = CounterMetricFamily("fedser_bytes_streamed", "Tensor bytes streamed over gRPC.", labels=["direction"])
            streamed.add_metric(["sent"], stats.bytes_sent)
            streamed.add_metric(["received"], stats.bytes_received)
            yield streamed

        seconds = [s for s in (_finite(r.get("seconds")) for r in history) if s is not None]
        yield SummaryMetricFamily("fedser_round_duration_seconds",
                                  "Wall time of a round: training, plus evaluation on eval rounds; without the wait for clients.",
                                  count_value=len(seconds), sum_value=sum(seconds))
        if seconds:
            yield GaugeMetricFamily("fedser_last_round_duration_seconds", "Wall time of the last completed round.", value=seconds[-1])
        waits = [s for s in (_finite(r.get("wait_seconds")) for r in history) if s is not None]
        yield CounterMetricFamily("fedser_wait_for_clients_seconds", "Time rounds waited for enough clients before they started.",
                                  value=sum(waits))
        last = history[-1] if history else {}
        loss = _finite(last.get("train_loss"))
        if loss is not None:
            yield GaugeMetricFamily("fedser_last_train_loss", "Mean training loss of the last round's updates.", value=loss)
        evaluated = [r for r in history if _finite(r.get("uar")) is not None]
        if evaluated:
            yield GaugeMetricFamily("fedser_last_uar", "UAR of the last evaluation, pooled over the clients' evaluation splits.",
                                    value=float(evaluated[-1]["uar"]))
            yield GaugeMetricFamily("fedser_last_uar_round", "Round of the last evaluation.", value=int(evaluated[-1]["round"]))
        released = [r for r in history if "dp_epsilon" in r]
        if released:  # privacy.dp: epsilon after the last released round; null in metrics.jsonl is no noise
            spent = released[-1]["dp_epsilon"]
            yield GaugeMetricFamily("fedser_dp_epsilon", "Differential privacy: epsilon spent so far, at fedser_dp_delta "
                                    "(+Inf: no noise).", value=math.inf if spent is None else float(spent))
            yield GaugeMetricFamily("fedser_dp_delta", "Differential privacy: the delta of the reported epsilon.",
                                    value=float(released[-1]["dp_delta"]))
        pseudo = [r["pseudo_taken"] for r in history if isinstance(r.get("pseudo_taken"), list)]
        if pseudo:
            taken = CounterMetricFamily("fedser_pseudo_labels_taken", "Pseudo-labels taken by clients, by class.", labels=["class_name"])
            for index, name in enumerate(stats.class_names):
                taken.add_metric([name], sum(int(p[index]) for p in pseudo if index < len(p)))
            yield taken

    @staticmethod
    def _refusals(live: dict[str, int] | None, history: list[dict[str, Any]]) -> Metric:
        refused = CounterMetricFamily("fedser_updates_refused", "Updates refused, by reason.", labels=["reason"])
        if live is not None:  # counted as they happen
            counts = dict(live)
        else:  # counted per round, when the round is recorded
            counts = {}
            for record in history:
                for reason, n in (record.get("refused") or {}).items():
                    counts[reason] = counts.get(reason, 0) + int(n)
        for reason, n in sorted(counts.items()):
            refused.add_metric([reason], n)
        return refused

    @staticmethod
    def _request_refusals(live: dict[tuple[str, str], int] | None, history: list[dict[str, Any]]) -> Metric:
        refused = CounterMetricFamily("fedser_requests_refused", "Calls other than SubmitUpdate refused, by method and reason.",
                                      labels=["rpc", "reason"])
        if live is not None:
            counts = dict(live)
        else:
            counts = {}
            for record in history:
                for key, n in (record.get("refused_requests") or {}).items():
                    rpc, _, reason = str(key).partition(".")
                    counts[(rpc, reason)] = counts.get((rpc, reason), 0) + int(n)
        for (rpc, reason), n in sorted(counts.items()):
            refused.add_metric([rpc, reason], n)
        return refused


@dataclass
class MetricsEndpoint:
    server: WSGIServer
    port: int

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def registry_for(coordinator: Observable) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CoordinatorCollector(coordinator))
    return registry


def start_metrics_endpoint(coordinator: Observable, port: int, host: str = "0.0.0.0") -> MetricsEndpoint:
    """Serve /metrics over HTTP on host:port (port 0 picks a free one) from a background thread."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry_for(coordinator))
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    bound = server.server_address[1]
    log.info("metrics_listening", address=f"{host}:{bound}", path="/metrics")
    return MetricsEndpoint(server, bound)
