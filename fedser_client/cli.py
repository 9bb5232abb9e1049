"""`fedser-client`: join a federation with a private data dir."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedser_shared.cli import entry_point, make_app
from fedser_shared.config_command import make_config_command
from fedser_shared.errors import ConfigError, DataError

if TYPE_CHECKING:
    import grpc

# torch, openSMILE, grpc and cryptography load inside the commands that use them, so that
# `--help` and `config` answer at once (benchmarks/startup.py).

app = make_app("The fedser client daemon.")


@app.callback()
def _root() -> None:
    """The fedser client daemon."""


def channel_credentials(ca_cert: str | None, cert: str | None, key: str | None, insecure: bool) -> grpc.ChannelCredentials | None:
    import grpc

    from fedser_shared.pem import check_key_matches, read_certificates, read_private_key

    if insecure:
        if ca_cert or cert or key:
            raise ConfigError("--insecure cannot be combined with --ca-cert/--cert/--key")
        return None
    if bool(cert) != bool(key):
        raise ConfigError("--cert and --key go together")
    chain, private_key = read_certificates(cert, "--cert"), read_private_key(key, "--key")
    if chain is not None and private_key is not None:
        check_key_matches(chain, private_key, "--cert", "--key")
    # without --ca-cert the system's trusted roots verify the server
    return grpc.ssl_channel_credentials(root_certificates=read_certificates(ca_cert, "--ca-cert"),
                                        private_key=private_key, certificate_chain=chain)


@app.command()
def join(
    server: Annotated[str, typer.Option("--server", help="coordinator HOST:PORT")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="audio files plus labels.csv (path,emotion)")],
    name: Annotated[str | None, typer.Option("--name", help="stable client name (default: host-datadir)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="client-side features/labels config (TOML)")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    insecure: Annotated[bool, typer.Option("--insecure", help="plaintext gRPC (loopback only)")] = False,
    ca_cert: Annotated[str | None, typer.Option("--ca-cert")] = None,
    cert: Annotated[str | None, typer.Option("--cert")] = None,
    key: Annotated[str | None, typer.Option("--key")] = None,
    token: Annotated[str, typer.Option("--token", envvar="FEDSER_TOKEN", help="enrolment token")] = "",
    upstream_ckpt: Annotated[Path | None, typer.Option("--upstream-ckpt", help="s3prl upstream checkpoint")] = None,
    threads: Annotated[int, typer.Option("--threads", help="torch CPU threads (0 = torch default)")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="feature extraction processes (0 = one per CPU core)")] = 0,
    connect_timeout: Annotated[float, typer.Option("--connect-timeout", help="seconds to keep retrying a server that does not answer (at start, or after it went away), then exit 2")] = 600.0,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Extract features (from cache when warm), then join the federation and serve tasks until SHUTDOWN."""
    import torch

    from fedser_client.app import build_daemon, default_name, resolve_device
    from fedser_client.extract import prepare_with_progress
    from fedser_shared.config import load_run_config
    from fedser_shared.logging import configure_logging

    configure_logging(log_level)
    if threads > 0:
        torch.set_num_threads(threads)
    if not data_dir.is_dir():
        raise DataError(f"data dir {data_dir} does not exist or is not a directory")
    local_config = load_run_config(config)
    credentials = channel_credentials(ca_cert, cert, key, insecure)
    client_name = name or default_name(data_dir)
    prepared = prepare_with_progress(data_dir, local_config, client_name, upstream_ckpt, resolve_device(device), workers)
    daemon = build_daemon(server, data_dir, local_config, client_name, resolve_device(device),
                          credentials, token, upstream_ckpt, connect_timeout, prepared=prepared)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    result = daemon.run()
    if not result.shutdown and not daemon.stop_event.is_set():
        raise DataError("the client stopped before the server said SHUTDOWN")


@app.command()
def extract(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="audio files plus labels.csv (path,emotion)")],
    feature: Annotated[str | None, typer.Option("--feature", help="emobase | egemaps | compare | apc | tera | decoar2 | distilhubert (default: the config's)")] = None,
    upstream_ckpt: Annotated[Path | None, typer.Option("--upstream-ckpt", help="local s3prl upstream checkpoint")] = None,
    workers: Annotated[int, typer.Option("--workers", help="extraction processes (0 = one per CPU core)")] = 0,
    config: Annotated[Path | None, typer.Option("--config", help="client-side features/labels config (TOML)")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda")] = "auto",
    log_level: Annotated[str, typer.Option("--log-level")] = "error",
) -> None:
    """Turn the data dir's audio into cached feature vectors; show what was found, extracted and skipped."""
    from fedser_client.app import resolve_device
    from fedser_client.extract import extract_with_progress
    from fedser_shared.config import load_run_config
    from fedser_shared.logging import configure_logging

    configure_logging(log_level)
    if not data_dir.is_dir():
        raise DataError(f"data dir {data_dir} does not exist or is not a directory")
    local_config = load_run_config(config, {"features.name": feature})
    extract_with_progress(data_dir, local_config, upstream_ckpt, resolve_device(device), workers)


app.command("config")(make_config_command("client"))

main = entry_point(app, "fedser-client")

if __name__ == "__main__":
    main()
