from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spawn() -> Iterator:
    """Start processes in their own process group; every one is killed when the test ends."""
    started: list[subprocess.Popen] = []

    def _spawn(args: list[str], log: Path, prefix: tuple[str, ...] = (), **kwargs) -> subprocess.Popen:
        """`prefix` runs the interpreter through another command (e.g. `ip netns exec NS`)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env", {})}
        proc = subprocess.Popen([*prefix, sys.executable, *args], cwd=ROOT, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, **kwargs)
        started.append(proc)
        return proc

    yield _spawn
    for proc in started:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)
