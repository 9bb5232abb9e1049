"""Each benchmark runs end to end at tiny sizes, writes its table and ends with `NAME = 0.00`.

Benchmarks are not part of CI; these smoke tests are. They never assert timings.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_benchmark(script: str, args: list[str], out: Path) -> list[str]:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("script", "args", "headline", "table"), [
    ("transport.py", ["--sizes", "0.5", "--reps", "1"], "fedser/bare_grpc", "transport.md"),
    ("vs_flower.py", ["--no-flower", "--cases", "emobase:3", "--rounds", "2"], "fedser round time s", "vs_flower.md"),
    ("server_memory.py", ["--model-mb", "1", "--clients", "3", "--scale-clients", "12", "--scale-rounds", "2",
                          "--scale-fraction", "0.25", "--timeout", "120"], "server_rss/model", "server_memory.md"),
    ("startup.py", ["--runs", "1"], "slowest_cli_s", "startup.md"),
    ("fleet.py", ["--clients", "6,12", "--sampled", "3", "--rounds", "2", "--per-process", "6", "--label", "smoke"],
     "threads(12)/threads(6)", "fleet_smoke.md"),
])
def test_benchmark_runs_and_prints_its_headline_last(tmp_path: Path, script: str, args: list[str], headline: str,
                                                       table: str) -> None:
    lines = run_benchmark(script, args, tmp_path)
    assert re.fullmatch(rf"{re.escape(headline)} = -?\d+\.\d\d", lines[-1]), lines[-3:]
    text = (tmp_path / table).read_text()
    assert "python" in text and "| ---" in text and "grpcio" in text
