"""`fedser-server`: run the coordinator."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Optional

import grpc
import typer

from fedser_server import app as server_app
from fedser_server.observability import commands as ops
from fedser_shared.config_command import make_config_command
from fedser_shared.config_doc import server_toml
from fedser_shared.cli import entry_point, make_app, read_file_arg
from fedser_shared.config import load_run_config
from fedser_shared.errors import ConfigError
from fedser_shared.logging import configure_logging

app = make_app("The fedser coordinator.")


@app.callback()
def _root() -> None:
    """The fedser coordinator."""


def server_credentials(tls_cert: str | None, tls_key: str | None, client_ca: str | None, insecure: bool) -> grpc.ServerCredentials | None:
    if insecure:
        if tls_cert or tls_key or client_ca:
            raise ConfigError("--insecure cannot be combined with --tls-cert/--tls-key/--client-ca")
        return None
    if not (tls_cert and tls_key):
        raise ConfigError("TLS is on by default: pass --tls-cert and --tls-key, or --insecure for plaintext on loopback")
    cert, key = read_file_arg(tls_cert, "TLS certificate"), read_file_arg(tls_key, "TLS key")
    ca = read_file_arg(client_ca, "client CA")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)


@app.command()
def serve(
    state_dir: Annotated[Path, typer.Option("--state-dir", help="where global state, registry and metrics.jsonl live")],
    address: Annotated[str, typer.Option("--address", help="HOST:PORT to listen on (port 0 picks a free port)")] = "0.0.0.0:7443",
    config: Annotated[Optional[Path], typer.Option("--config", help="run configuration (TOML)")] = None,
    rounds: Annotated[Optional[int], typer.Option("--rounds")] = None,
    min_clients: Annotated[Optional[int], typer.Option("--min-clients")] = None,
    fraction: Annotated[Optional[float], typer.Option("--fraction")] = None,
    algorithm: Annotated[Optional[str], typer.Option("--algorithm", help="fedavg | scaffold")] = None,
    eval_every: Annotated[Optional[int], typer.Option("--eval-every")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="plaintext gRPC (loopback only)")] = False,
    tls_cert: Annotated[Optional[str], typer.Option("--tls-cert")] = None,
    tls_key: Annotated[Optional[str], typer.Option("--tls-key")] = None,
    client_ca: Annotated[Optional[str], typer.Option("--client-ca", help="require client certificates signed by this CA")] = None,
    client_timeout: Annotated[float, typer.Option("--client-timeout", help="seconds of silence before a client counts as gone")] = 120.0,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    metrics_port: Annotated[Optional[int], typer.Option("--metrics-port", help="serve Prometheus /metrics on this port, same host as --address (off by default)")] = None,
) -> None:
    """Serve federated rounds until the last one, then stop."""
    configure_logging(log_level)
    run_config = load_run_config(config, {
        "federation.rounds": rounds, "federation.min_clients": min_clients, "federation.fraction": fraction,
        "federation.algorithm": algorithm, "federation.eval_every": eval_every, "federation.seed": seed,
    })
    credentials = server_credentials(tls_cert, tls_key, client_ca, insecure)
    running = server_app.start(run_config, address, state_dir, credentials, client_timeout)
    try:
        metrics = ops.start_metrics(running.coordinator, address, metrics_port)
    except BaseException:
        running.shutdown()
        raise

    def _terminate(signum: int, _frame: object) -> None:
        running.coordinator.stop()

    signal.signal(signal.SIGTERM, _terminate)
    try:
        server_app.serve_until_done(running)
    except KeyboardInterrupt:
        running.shutdown()
        raise
    finally:
        if metrics is not None:
            metrics.stop()


app.command("status")(ops.status)
app.command("report")(ops.report)
app.command("probe")(ops.probe)
app.command("config")(make_config_command(server_toml))

main = entry_point(app, "fedser-server")

if __name__ == "__main__":
    main()
