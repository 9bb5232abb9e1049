"""The health probe that container HEALTHCHECKs and Kubernetes exec probes run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fedser_server import app as server_app
from fedser_server import probe
from fedser_server.cli import app
from fedser_shared.cli import run_cli
from fedser_shared.config import RunConfig
from tests.conftest import free_port


@pytest.fixture
def plain_server(tmp_path: Path):
    running = server_app.start(RunConfig(), "127.0.0.1:0", tmp_path / "state", None)
    yield f"127.0.0.1:{running.port}"
    running.shutdown(0)


def test_a_serving_server_is_healthy(plain_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert probe.check(plain_server, insecure=True).healthy
    assert run_cli(app, "fedser-server", ["probe", "--address", plain_server, "--insecure"]) == 0
    assert "SERVING" in capsys.readouterr().out


def test_nothing_listening_is_unhealthy_in_one_line() -> None:
    # a refused connection answers at once; the probe's timeout only bounds a hang
    address = f"127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-m", "fedser_server.probe", "--address", address, "--insecure", "--timeout", "30"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy:") and result.stderr.count("\n") == 1 and "UNAVAILABLE" in result.stderr


def test_tls_probe_against_a_plaintext_server_fails(plain_server: str, tmp_path: Path) -> None:
    # the handshake fails at once; the timeout only bounds a hang
    mismatch = probe.check(plain_server, timeout_s=30)
    assert not mismatch.healthy and "UNAVAILABLE" in mismatch.message
    missing = probe.check(plain_server, ca_cert=str(tmp_path / "nope.pem"))
    assert not missing.healthy and "cannot read CA certificate" in missing.message
