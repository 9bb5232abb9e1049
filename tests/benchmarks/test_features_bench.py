"""benchmarks/features.py on a small generated data dir: each openSMILE set timed against emobase in one run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_client_dir

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "features.py"


@pytest.mark.timeout(240)
def test_each_opensmile_set_gets_a_row_and_a_ratio_to_emobase(tmp_path: Path) -> None:
    folder = make_client_dir(tmp_path, "c", per_class=2)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--corpus", str(folder), "--features", "emobase,egemaps,compare",
                           "--workers", "1", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=220, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (tmp_path / "out" / "features.md").read_text()
    rows = {cells[0]: cells for cells in (line.strip("| ").split(" | ") for line in table.splitlines()
                                          if re.match(r"\| (emobase|egemaps|compare) \|", line))}
    assert set(rows) == {"emobase", "egemaps", "compare"}
    assert [rows[n][1] for n in ("emobase", "egemaps", "compare")] == ["988", "88", "6373"]
    for name in ("egemaps", "compare"):
        assert float(rows[name][10]) > 0  # per core / emobase's, measured in this run
        assert re.search(rf"- {name} with 1 worker\(s\): [\d.]+× real time per core, [\d.]+ of emobase's", table)
    assert all(cells[-1] == "0" for cells in rows.values())  # nothing skipped
