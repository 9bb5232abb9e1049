"""The operator commands of `fedser-server`: status, report, probe (registered in fedser_server.cli).

Each imports what it needs inside itself (rich, grpc, matplotlib, pydantic), so that the CLI answers at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedser_shared.errors import ConfigError

if TYPE_CHECKING:
    from fedser_server.observability.metrics import MetricsEndpoint

StateDir = Annotated[Path, typer.Option("--state-dir", help="the server's state dir (metrics.jsonl, registry.sqlite)")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="run configuration (TOML), for class names")]


def _class_names(config: Path | None, saved: list[str] | None) -> list[str] | None:
    if config is None:
        return saved
    from fedser_shared.config import load_run_config

    return list(load_run_config(config).labels.class_names)


def status(state_dir: StateDir, config: ConfigFile = None,
           as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False) -> None:
    """Summarise a run from its state dir: current round, last metrics, clients and when they were last seen."""
    from rich.console import Console

    from fedser_server.observability import status as view
    from fedser_server.observability.snapshot import load_snapshot

    snapshot = load_snapshot(state_dir)
    names = _class_names(config, snapshot.class_names)
    if as_json:
        typer.echo(json.dumps(view.summary(snapshot, names), indent=2))
    else:
        view.render(snapshot, Console(), names)


def report(state_dir: StateDir, config: ConfigFile = None,
           out: Annotated[Path | None, typer.Option("--out", help="where to write the report (default STATE_DIR/report)")] = None) -> None:
    """Write report.html and PNG plots (UAR, loss, pseudo-labels per round) from a state dir."""
    from fedser_server.observability.report import write_report
    from fedser_server.observability.snapshot import load_snapshot

    snapshot = load_snapshot(state_dir)
    files = write_report(snapshot, out or state_dir / "report", _class_names(config, snapshot.class_names))
    typer.echo(f"wrote {files.html}")
    for path in files.plots:
        typer.echo(f"wrote {path}")


def probe(
    address: Annotated[str, typer.Option("--address", help="server HOST:PORT")] = "127.0.0.1:7443",
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for an answer")] = 3.0,
    ca_cert: Annotated[str | None, typer.Option("--ca-cert", help="CA that signed the server certificate")] = None,
    cert: Annotated[str | None, typer.Option("--cert", help="client certificate, where the server requires one")] = None,
    key: Annotated[str | None, typer.Option("--key", help="client key")] = None,
    server_name: Annotated[str | None, typer.Option("--server-name", help="name to verify in the server certificate")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="plaintext gRPC")] = False,
) -> None:
    """Ask a server's gRPC health service whether it is SERVING (exit 0) or not (exit 1)."""
    from fedser_server import probe as health_probe

    result = health_probe.check(address, timeout, "", ca_cert, cert, key, server_name, insecure)
    typer.echo(f"{'healthy' if result.healthy else 'unhealthy'}: {result.message}", err=not result.healthy)
    if not result.healthy:
        raise typer.Exit(1)


def start_metrics(coordinator: object, grpc_address: str, port: int | None) -> MetricsEndpoint | None:
    """`serve --metrics-port`: the metrics endpoint on the gRPC address's host, or nothing when off."""
    if port is None:
        return None
    if not 0 <= port <= 65535:
        raise ConfigError(f"--metrics-port must be 0..65535, not {port}")
    from fedser_server.observability.metrics import start_metrics_endpoint

    host = grpc_address.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"
    return start_metrics_endpoint(coordinator, port, host)  # type: ignore[arg-type]
