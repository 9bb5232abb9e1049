"""A development certificate authority: a CA, a server certificate and client certificates.

For tests, compose files and first trials. Production deployments should use their own PKI;
docs/security.md shows the equivalent openssl commands.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedser_shared.errors import StateError
from fedser_shared.fsutil import atomic_write_bytes

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _san(hosts: tuple[str, ...] | list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days)))


class DevCA:
    def __init__(self, name: str = "fedser dev CA", days: int = 365) -> None:
        self.days = days
        self._key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self._name = subject
        self.cert = (_builder(name, subject, self._key.public_key(), days)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                                  key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self._key, hashes.SHA256()))

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self._key)

    def _issue(self, common_name: str, usage: x509.ObjectIdentifier, hosts: tuple[str, ...] | list[str]) -> KeyPair:
        key = _key()
        builder = (_builder(common_name, self._name, key.public_key(), self.days)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if hosts:
            builder = builder.add_extension(_san(hosts), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def server(self, hosts: tuple[str, ...] | list[str] = DEFAULT_HOSTS) -> KeyPair:
        return self._issue(hosts[0] if hosts else "fedser-server", ExtendedKeyUsageOID.SERVER_AUTH, hosts)

    def client(self, name: str) -> KeyPair:
        return self._issue(name, ExtendedKeyUsageOID.CLIENT_AUTH, [])


def write_dev_pki(out: Path, hosts: list[str], clients: list[str]) -> list[Path]:
    """Write ca.pem, ca.key, server.pem, server.key and <client>.pem/.key for each client name."""
    ca = DevCA()
    files: dict[str, bytes] = {"ca.pem": ca.cert_pem, "ca.key": ca.key_pem}
    server = ca.server(hosts or list(DEFAULT_HOSTS))
    files.update({"server.pem": server.cert_pem, "server.key": server.key_pem})
    for name in clients:
        pair = ca.client(name)
        files.update({f"{name}.pem": pair.cert_pem, f"{name}.key": pair.key_pem})
    written = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for filename, data in files.items():
            path = out / filename
            atomic_write_bytes(path, data)
            if filename.endswith(".key"):
                path.chmod(0o600)
            written.append(path)
    except OSError as exc:
        raise StateError(f"cannot write certificates to {out}: {exc.strerror or exc}") from None
    return written
