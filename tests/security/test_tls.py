"""TLS is on by default; with a client CA the server demands client certificates."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from fedser_server.security.certs import write_dev_pki
from fedser_server.security.tls import server_credentials
from fedser_shared.cli import run_cli
from fedser_shared.errors import ConfigError
from tests.faults import raw

pytestmark = pytest.mark.timeout(120)


def _tls_server(tmp_path: Path, pki, mutual: bool):
    """What `serve --tls-cert --tls-key [--client-ca]` builds, from real files."""
    files = {"cert": pki["server"].cert_pem, "key": pki["server"].key_pem, "ca": pki["ca"].cert_pem}
    for name, data in files.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    credentials = server_credentials(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"),
                                     str(tmp_path / "ca.pem") if mutual else None, insecure=False)
    return raw.start(tmp_path, credentials=credentials)


def _join_code(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel, stub = raw.stub_for(port, credentials)
    try:
        return raw.code_of(lambda: raw.join(stub, "tls-client"))[0]
    finally:
        channel.close()


def test_tls_server_accepts_a_verified_channel_and_refuses_plaintext_and_strangers(tmp_path: Path, pki) -> None:
    server = _tls_server(tmp_path, pki, mutual=False)
    try:
        assert _join_code(server.port, None) == grpc.StatusCode.UNAVAILABLE  # no TLS against a TLS server
        wrong_ca = grpc.ssl_channel_credentials(root_certificates=pki["stranger_ca"].cert_pem)
        assert _join_code(server.port, wrong_ca) == grpc.StatusCode.UNAVAILABLE  # server not trusted
        assert not server.coordinator.registry.clients
        good = grpc.ssl_channel_credentials(root_certificates=pki["ca"].cert_pem)
        assert _join_code(server.port, good) == grpc.StatusCode.OK
        assert [c.name for c in server.coordinator.registry.clients.values()] == ["tls-client"]
    finally:
        server.shutdown(grace_s=0.2)


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(tmp_path: Path, pki) -> None:
    server = _tls_server(tmp_path, pki, mutual=True)
    try:
        ca = pki["ca"].cert_pem
        no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
        assert _join_code(server.port, no_cert) == grpc.StatusCode.UNAVAILABLE
        foreign = pki["stranger_ca"].client("mallory")
        forged = grpc.ssl_channel_credentials(root_certificates=ca, private_key=foreign.key_pem, certificate_chain=foreign.cert_pem)
        assert _join_code(server.port, forged) == grpc.StatusCode.UNAVAILABLE
        assert not server.coordinator.registry.clients
        client = pki["client"]
        good = grpc.ssl_channel_credentials(root_certificates=ca, private_key=client.key_pem, certificate_chain=client.cert_pem)
        assert _join_code(server.port, good) == grpc.StatusCode.OK
    finally:
        server.shutdown(grace_s=0.2)


def test_server_credentials_check_the_files(tmp_path: Path) -> None:
    paths = {p.name: str(p) for p in write_dev_pki(tmp_path / "pki", [], ["bob"])}
    assert server_credentials(paths["server.pem"], paths["server.key"], paths["ca.pem"], insecure=False) is not None
    assert server_credentials(None, None, None, insecure=True) is None
    for args, needle in [((None, None, None, False), "--insecure"),
                         ((paths["server.pem"], paths["bob.key"], None, False), "does not belong"),
                         ((paths["server.key"], paths["server.key"], None, False), "no PEM certificate"),
                         ((paths["server.pem"], paths["server.pem"], None, False), "no unencrypted PEM private key"),
                         ((paths["server.pem"], paths["server.key"], None, True), "cannot be combined")]:
        with pytest.raises(ConfigError, match=needle):
            server_credentials(*args)


def test_certs_dev_command_writes_a_usable_set(tmp_path: Path, capsys) -> None:
    from fedser_server.cli import app

    assert run_cli(app, "fedser-server", ["certs", "dev", "--out", str(tmp_path / "pki"), "--client", "carol",
                                          "--host", "fedser.example", "--host", "10.0.0.7"]) == 0
    names = sorted(p.name for p in (tmp_path / "pki").iterdir())
    assert names == ["ca.key", "ca.pem", "carol.key", "carol.pem", "server.key", "server.pem"]
    assert (tmp_path / "pki" / "server.key").stat().st_mode & 0o077 == 0
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tmp_path / "pki" / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "fedser.example" in san.get_values_for_type(x509.DNSName)
