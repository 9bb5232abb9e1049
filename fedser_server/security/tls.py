"""Server transport security: TLS by default, mutual TLS with a client CA, plaintext only on request."""

from __future__ import annotations

import grpc

from fedser_shared.errors import ConfigError
from fedser_shared.pem import check_key_matches, read_certificates, read_private_key


def server_credentials(tls_cert: str | None, tls_key: str | None, client_ca: str | None, insecure: bool) -> grpc.ServerCredentials | None:
    """None means plaintext (`--insecure`); with `client_ca` every client must present a certificate it signed."""
    if insecure:
        if tls_cert or tls_key or client_ca:
            raise ConfigError("--insecure cannot be combined with --tls-cert/--tls-key/--client-ca")
        return None
    if not (tls_cert and tls_key):
        raise ConfigError("TLS is on by default: pass --tls-cert and --tls-key (`fedser-server certs dev --out DIR` "
                          "makes a dev set), or --insecure for plaintext on loopback")
    cert = read_certificates(tls_cert, "--tls-cert")
    key = read_private_key(tls_key, "--tls-key")
    assert cert is not None and key is not None
    check_key_matches(cert, key, "--tls-cert", "--tls-key")
    ca = read_certificates(client_ca, "--client-ca")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
