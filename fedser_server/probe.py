"""A gRPC health probe for container HEALTHCHECKs and Kubernetes exec probes.

    python -m fedser_server.probe --address 127.0.0.1:7443 --ca-cert ca.pem --server-name localhost

Exit 0 when the server answers SERVING, 1 otherwise, with one line saying why. Every option
can also come from the environment (FEDSER_PROBE_ADDRESS, _CA_CERT, _CERT, _KEY, _SERVER_NAME,
_INSECURE=1, _TIMEOUT). Imports only grpc, so a probe every few seconds stays cheap.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedser_shared.errors import FedserError
from fedser_shared.fsutil import read_file_arg


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    message: str


def check(address: str, timeout_s: float = 3.0, service: str = "", ca_cert: str | None = None, cert: str | None = None,
          key: str | None = None, server_name: str | None = None, insecure: bool = False) -> ProbeResult:
    """Ask the server's grpc.health.v1 service whether `service` ("" = the whole server) is SERVING."""
    if insecure and (ca_cert or cert or key):
        return ProbeResult(False, "--insecure cannot be combined with --ca-cert/--cert/--key")
    if bool(cert) != bool(key):
        return ProbeResult(False, "--cert and --key go together")
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    try:
        if insecure:
            channel = grpc.insecure_channel(address, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(read_file_arg(ca_cert, "CA certificate"), read_file_arg(key, "client key"),
                                                       read_file_arg(cert, "client certificate"))
            channel = grpc.secure_channel(address, credentials, options=options)
    except FedserError as exc:
        return ProbeResult(False, str(exc))
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            return ProbeResult(False, f"{address}: {code.name if code else 'error'}: {detail}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return ProbeResult(reply.status == health_pb2.HealthCheckResponse.SERVING, f"{address}: {status}")


def add_arguments(parser: argparse.ArgumentParser, env: dict[str, str] | None = None) -> None:
    """Each option defaults to FEDSER_PROBE_<OPTION> from the environment, so an image's HEALTHCHECK
    stays one fixed command and the deployment (compose, Kubernetes) says where the certificates are."""
    env = dict(os.environ) if env is None else env

    def default(name: str, fallback: str | None = None) -> str | None:
        return env.get(f"FEDSER_PROBE_{name}") or fallback

    parser.add_argument("--address", default=default("ADDRESS", "127.0.0.1:7443"), help="server HOST:PORT (default 127.0.0.1:7443)")
    parser.add_argument("--timeout", type=float, default=float(default("TIMEOUT", "3") or 3), help="seconds to wait for an answer")
    parser.add_argument("--service", default=default("SERVICE", ""), help="service name to check (default: the whole server)")
    parser.add_argument("--ca-cert", default=default("CA_CERT"), help="CA that signed the server certificate (default: system roots)")
    parser.add_argument("--cert", default=default("CERT"), help="client certificate, where the server requires one")
    parser.add_argument("--key", default=default("KEY"), help="client key")
    parser.add_argument("--server-name", default=default("SERVER_NAME"),
                        help="name to verify in the server certificate (e.g. when probing 127.0.0.1)")
    parser.add_argument("--insecure", action="store_true", default=default("INSECURE", "") in ("1", "true", "yes"),
                        help="plaintext gRPC")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedser_server.probe", description="gRPC health probe for a fedser server")
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = check(args.address, args.timeout, args.service, args.ca_cert, args.cert, args.key, args.server_name, args.insecure)
    print(f"{'healthy' if result.healthy else 'unhealthy'}: {result.message}", file=sys.stdout if result.healthy else sys.stderr)
    return 0 if result.healthy else 1


if __name__ == "__main__":
    sys.exit(main())
