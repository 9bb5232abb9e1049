"""The command-line tools start without the heavy libraries, and the server never loads torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "opensmile", "matplotlib", "grpc", "cryptography", "structlog")


def loaded_after(code: str) -> set[str]:
    """Which of HEAVY a fresh interpreter has in sys.modules after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_the_clis_import_none_of_the_heavy_libraries() -> None:
    assert loaded_after("import fedser_server.cli, fedser_client.cli, fedser_sim.cli") == set()


def test_the_server_never_imports_torch(tmp_path: Path) -> None:
    """Importing the server and building its round loop (initial model included) leaves torch unloaded."""
    code = ("import fedser_server.cli, fedser_server.app as app\n"
            "from fedser_shared.config import load_run_config\n"
            f"app.build_loop(load_run_config(None), __import__('pathlib').Path({str(tmp_path / 'state')!r})).close()")
    assert "torch" not in loaded_after(code)
