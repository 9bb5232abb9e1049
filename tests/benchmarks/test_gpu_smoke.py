"""benchmarks/gpu.py: its CPU column runs end to end at quick size; a missing GPU is a one-line error.

The CUDA column needs a GPU and is never part of CI; results from a GPU machine are in benchmarks/results/gpu.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def run(args: list[str], out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(out)], check=False, capture_output=True,
                          text=True, timeout=240)


@pytest.mark.timeout(300)
def test_cpu_column_runs_and_prints_its_headline_last(tmp_path: Path) -> None:
    proc = run(["--quick", "--devices", "cpu"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.fullmatch(r"cpu s3prl extraction x real time = \d+\.\d\d", proc.stdout.strip().splitlines()[-1])
    table = (tmp_path / "gpu_quick.md").read_text()
    assert "| client shard, emobase, default MLP | 300 |" in table and "| apc | 8 |" in table


@pytest.mark.parametrize(("devices", "message"), [
    ("cpu,tpu", "--devices takes cpu and cuda, not tpu"),
    pytest.param("cpu,cuda", "no CUDA device", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
])
def test_bad_device_choice_is_one_line(tmp_path: Path, devices: str, message: str) -> None:
    proc = run(["--quick", "--devices", devices], tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
