"""The images, run for real: a TLS server and three token-enrolled clients for a few rounds.

Opt-in (FEDSER_DOCKER_SMOKE=1): it needs a running Docker daemon and the images built
(docs/deploy.md), and takes minutes. Everywhere else it skips, saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fedser_server.security.certs import write_dev_pki
from fedser_server.security.tokens import TokenStore
from tests.conftest import make_client_dir

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("fedser-server:0.1.0", "fedser-client:0.1.0")


def _why_not() -> str | None:
    if os.environ.get("FEDSER_DOCKER_SMOKE") != "1":
        return "opt-in: set FEDSER_DOCKER_SMOKE=1 (needs a Docker daemon and the built images)"
    if shutil.which("docker") is None:
        return "no docker CLI"
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        return "no Docker daemon reachable"
    for image in IMAGES:
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=30).returncode != 0:
            return f"image {image} is not built (docs/deploy.md)"
    if os.geteuid() != 0:
        return "needs root to hand the mounted dirs to the images' uid 10001"
    return None


def test_images_run_a_federation(tmp_path: Path) -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    secrets = tmp_path / "secrets"
    write_dev_pki(secrets / "tls", ["server", "localhost", "127.0.0.1"], [])
    tokens = TokenStore(secrets / "tokens" / "tokens.json")
    for n in (1, 2, 3):
        (secrets / f"client-{n}.token").write_text(tokens.add(f"client-{n}"))
        make_client_dir(tmp_path / "data", f"client-{n}", per_class=6, seed=n)
    (tmp_path / "state").mkdir()
    subprocess.run(["chown", "-R", "10001:10001", str(tmp_path)], check=True)
    result = subprocess.run(["sh", str(ROOT / "deploy" / "docker" / "smoke.sh"), str(tmp_path), "2"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rounds logged: 2" in result.stdout
