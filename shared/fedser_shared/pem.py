"""Read PEM files given on a command line and check they hold what the flag promises."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedser_shared.errors import ConfigError
from fedser_shared.fsutil import read_file_arg


def read_certificates(path: str | None, flag: str) -> bytes | None:
    data = read_file_arg(path, f"{flag} file")
    if data is None:
        return None
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{flag} {path} holds no PEM certificate") from None
    return data


def read_private_key(path: str | None, flag: str) -> bytes | None:
    data = read_file_arg(path, f"{flag} file")
    if data is None:
        return None
    try:
        serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{flag} {path} holds no unencrypted PEM private key") from None
    return data


def check_key_matches(cert_pem: bytes, key_pem: bytes, cert_flag: str, key_flag: str) -> None:
    cert = x509.load_pem_x509_certificates(cert_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, public) != key.public_key().public_bytes(serialization.Encoding.DER, public):
        raise ConfigError(f"{key_flag} does not belong to the certificate in {cert_flag}")
