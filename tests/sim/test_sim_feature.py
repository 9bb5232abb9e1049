"""`fedser-sim --feature`: a federation on eGeMAPS vectors, and a misspelt set named as the config field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedser_client.features.cache import FeatureCache, file_digest
from fedser_client.features.opensmile_functionals import OpenSmileExtractor
from tests.observability.conftest import make_corpus


def _sim(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fedser_sim.cli", "--out", str(tmp_path / "run"), "--workers", "1",
                           "--feature-cache", str(tmp_path / "cache"), *args],
                          capture_output=True, text=True, timeout=200, env=env)


@pytest.mark.timeout(240)
def test_a_federation_on_egemaps_trains_an_88_wide_model_from_the_egemaps_cache(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", speakers=3, per_class=2)
    proc = _sim(tmp_path, "--corpus", str(corpus), "--clients", "2", "--rounds", "2", "--engine", "inprocess",
                "--feature", "egemaps", "--test-speakers", "1", "--fraction", "1.0", "--eval-every", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "features (egemaps)" in proc.stdout
    run_config = tomllib.loads((tmp_path / "run" / "run.toml").read_text())
    assert run_config["features"]["name"] == "egemaps"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.0 <= summary["held_out_uar"]["2"] <= 1.0
    extractor = OpenSmileExtractor("egemaps")
    cache = FeatureCache.for_extractor(tmp_path / "cache", extractor)
    vectors = [cache.get(file_digest(path)) for path in sorted((corpus / "audio").glob("*.wav"))]
    assert len(vectors) == 24 and all(v is not None and v.shape == (88,) and np.isfinite(v).all() for v in vectors)


def test_a_misspelt_feature_set_is_one_line_naming_the_field(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", speakers=2, per_class=1)
    proc = _sim(tmp_path, "--corpus", str(corpus), "--rounds", "1", "--clients", "2", "--feature", "gemaps")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "features.name" in errors[0] and "egemaps" in errors[0], proc.stderr
