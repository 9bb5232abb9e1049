"""A state dir from a real `fedser-sim --engine inprocess` run on a tiny generated corpus (built once)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fedser_shared.cli import run_cli
from tests.conftest import EMOTIONS, synth_clip


def make_corpus(root: Path, speakers: int = 4, per_class: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(speakers):
        for cls, emotion in enumerate(EMOTIONS):
            for i in range(per_class):
                rel = f"audio/spk{s}_{emotion}_{i}.wav"
                sf.write(root / rel, synth_clip(cls, rng), 16_000)
                rows.append((rel, f"spk{s}", emotion))
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "speaker", "emotion"])
        writer.writerows(rows)
    return root


@pytest.fixture(scope="session")
def sim_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN/server/ of a 3-round, 2-client semi-supervised federation, evaluated every round."""
    from fedser_sim.cli import app

    root = tmp_path_factory.mktemp("sim")
    corpus = make_corpus(root / "corpus")
    config = root / "run.toml"
    config.write_text("[semi]\nenabled = true\n[federation]\nfraction = 1.0\n")
    code = run_cli(app, "fedser-sim", [
        "--corpus", str(corpus), "--out", str(root / "run"), "--clients", "2", "--rounds", "3", "--eval-every", "1",
        "--engine", "inprocess", "--config", str(config), "--workers", "1", "--feature-cache", str(root / "cache")])
    assert code == 0
    return root / "run" / "server"
