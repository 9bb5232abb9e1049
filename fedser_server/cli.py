"""`fedser-server`: run the coordinator."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedser_server.observability import commands as ops
from fedser_server.observability import json_stderr
from fedser_shared.cli import entry_point, make_app
from fedser_shared.config_command import make_config_command
from fedser_shared.errors import ConfigError

if TYPE_CHECKING:
    from fedser_server.security.tokens import TokenStore

# Each command imports what only it needs (grpc, cryptography, pydantic, numpy, structlog) inside itself,
# so that `--help`, `status`, `token add` and the like answer at once (benchmarks/startup.py).
app = make_app("The fedser coordinator.")


@app.callback()
def _root() -> None:
    """The fedser coordinator."""


@app.command()
def serve(
    state_dir: Annotated[Path, typer.Option("--state-dir", help="where global state, registry and metrics.jsonl live")],
    address: Annotated[str, typer.Option("--address", help="HOST:PORT to listen on (port 0 picks a free port)")] = "0.0.0.0:7443",
    config: Annotated[Path | None, typer.Option("--config", help="run configuration (TOML)")] = None,
    rounds: Annotated[int | None, typer.Option("--rounds")] = None,
    min_clients: Annotated[int | None, typer.Option("--min-clients")] = None,
    fraction: Annotated[float | None, typer.Option("--fraction")] = None,
    algorithm: Annotated[str | None, typer.Option("--algorithm", help="fedavg | scaffold")] = None,
    eval_every: Annotated[int | None, typer.Option("--eval-every")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="plaintext gRPC (loopback only)")] = False,
    tls_cert: Annotated[str | None, typer.Option("--tls-cert")] = None,
    tls_key: Annotated[str | None, typer.Option("--tls-key")] = None,
    client_ca: Annotated[str | None, typer.Option("--client-ca", help="require client certificates signed by this CA")] = None,
    client_timeout: Annotated[float | None, typer.Option("--client-timeout", help="server.client_timeout_s: seconds of silence before a client counts as gone")] = None,
    heartbeat_interval: Annotated[float | None, typer.Option("--heartbeat-interval", help="server.heartbeat_interval_s: seconds between a client's heartbeats, told to it at join (default min(10, client-timeout/4)); longer for large fleets")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run saved in --state-dir from its last completed round")] = False,
    tokens_file: Annotated[Path | None, typer.Option("--tokens-file", help="enrolment token hashes (default STATE_DIR/tokens.json)")] = None,
    open_enrolment: Annotated[bool, typer.Option("--open-enrolment", help="let any client join without a token")] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="serve Prometheus /metrics on this port, same host as --address (off by default)")] = None,
) -> None:
    """Serve federated rounds until the last one, then stop."""
    from fedser_server import app as server_app
    from fedser_server.security.enrolment import enrolment_policy
    from fedser_server.security.tls import server_credentials
    from fedser_server.security.tokens import token_store
    from fedser_shared.logging import configure_logging, get_logger

    log = get_logger(__name__)
    if not sys.stderr.isatty():
        json_stderr.capture()  # grpc's own lines (TLS handshake failures) become JSON like ours
    configure_logging(log_level)
    run_config = server_app.run_config_for(state_dir, config, {
        "federation.rounds": rounds, "federation.min_clients": min_clients, "federation.fraction": fraction,
        "federation.algorithm": algorithm, "federation.eval_every": eval_every, "federation.seed": seed,
        "server.client_timeout_s": client_timeout, "server.heartbeat_interval_s": heartbeat_interval,
    }, resume)
    credentials = server_credentials(tls_cert, tls_key, client_ca, insecure)
    tokens = enrolment_policy(token_store(state_dir, tokens_file), open_enrolment, insecure)
    terminated = threading.Event()
    running: server_app.RunningServer | None = None

    def _terminate(signum: int, _frame: object) -> None:
        # installed before the server starts: a SIGTERM that arrives while it starts is heard too
        log.warning("signal_received", signal=signal.Signals(signum).name,
                    completed_round=running.coordinator.completed_round if running is not None else None)
        terminated.set()
        if running is not None:
            running.loop.stop()

    signal.signal(signal.SIGTERM, _terminate)
    running = server_app.start(run_config, address, state_dir, credentials, tokens, resume)
    if terminated.is_set():
        running.loop.stop()
    try:
        metrics = ops.start_metrics(running.coordinator, address, metrics_port)
    except BaseException:
        running.shutdown()
        raise

    try:
        server_app.serve_until_done(running)
        if running.loop.stop_reason is not None:  # a clean early end (a privacy budget): exit 0, say why
            typer.echo(f"run stopped: {running.loop.stop_reason}")
    except KeyboardInterrupt:
        running.shutdown()
        raise
    finally:
        if metrics is not None:
            metrics.stop()


app.command("status")(ops.status)
app.command("report")(ops.report)
app.command("probe")(ops.probe)
app.command("config")(make_config_command("server"))

token_app = make_app("Enrolment tokens: one per client, stored hashed.")
app.add_typer(token_app, name="token")
StateDirOption = Annotated[Path | None, typer.Option("--state-dir", help="the server's state dir (tokens.json lives there)")]
TokensFileOption = Annotated[Path | None, typer.Option("--tokens-file", help="a tokens file outside the state dir")]


def _tokens(state_dir: Path | None, tokens_file: Path | None) -> TokenStore:
    if (state_dir is None) == (tokens_file is None):
        raise ConfigError("pass exactly one of --state-dir or --tokens-file")
    from fedser_server.security.tokens import token_store

    return token_store(state_dir or Path("."), tokens_file)


@token_app.command("add")
def token_add(name: Annotated[str, typer.Argument(help="the client this token enrols")],
              state_dir: StateDirOption = None, tokens_file: TokensFileOption = None) -> None:
    """Create a token for NAME and print it once (only its hash is kept)."""
    from fedser_server.security.tokens import check_client_name

    token = _tokens(state_dir, tokens_file).add(check_client_name(name))
    typer.echo(token)
    typer.echo(f"token for '{name}' stored as a hash; it cannot be shown again", err=True)


@token_app.command("list")
def token_list(state_dir: StateDirOption = None, tokens_file: TokensFileOption = None) -> None:
    """List the client names that hold a token."""
    for entry in _tokens(state_dir, tokens_file).entries():
        typer.echo(entry.name)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument()], state_dir: StateDirOption = None, tokens_file: TokensFileOption = None) -> None:
    """Revoke NAME's token: it can no longer join (a live session ends when it next has to join)."""
    if not _tokens(state_dir, tokens_file).revoke(name):
        raise ConfigError(f"no token for '{name}'")


certs_app = make_app("Certificates for TLS.")
app.add_typer(certs_app, name="certs")


@certs_app.command("dev")
def certs_dev(
    out: Annotated[Path, typer.Option("--out", help="directory for ca.pem, server.pem/.key and <client>.pem/.key")],
    host: Annotated[list[str] | None, typer.Option("--host", help="server DNS name or IP (repeatable; default localhost, 127.0.0.1, ::1)")] = None,
    client: Annotated[list[str] | None, typer.Option("--client", help="client certificate to make for mutual TLS (repeatable)")] = None,
) -> None:
    """Make a development CA, a server certificate and client certificates (not for production)."""
    from fedser_server.security.certs import write_dev_pki
    from fedser_server.security.tokens import check_client_name

    for path in write_dev_pki(out, host or [], [check_client_name(c) for c in client or []]):
        typer.echo(path)


main = entry_point(app, "fedser-server")

if __name__ == "__main__":
    main()
