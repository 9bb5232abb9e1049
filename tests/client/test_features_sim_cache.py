"""fedser-sim's corpus pass: extract once into a shared cache, seed client dirs so clients start warm."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fedser_client.data.labels import scan_data_dir
from fedser_client.features.base import ExtractorSpec
from fedser_client.features.pipeline import extract_features
from fedser_shared.config import LabelsConfig
from fedser_sim.features import extract_corpus, seed_client_cache
from tests.conftest import make_client_dir


def test_seeded_client_finds_every_vector_without_extracting(tmp_path: Path) -> None:
    corpus = make_client_dir(tmp_path, "corpus", per_class=2)
    (corpus / "audio" / "bad.wav").write_text("not audio")
    paths = sorted(p.relative_to(corpus).as_posix() for p in (corpus / "audio").iterdir())
    progress: list[tuple[int, int]] = []
    features = extract_corpus(corpus, paths, "emobase", tmp_path / "shared-cache", 1, lambda d, t: progress.append((d, t)))
    vectors, failed = features.vectors, features.failed
    assert len(vectors) == 8 and list(failed) == ["audio/bad.wav"] and progress[-1] == (9, 9)

    again = extract_corpus(corpus, paths, "emobase", tmp_path / "shared-cache", 1).vectors
    np.testing.assert_array_equal(again["audio/happy_0.wav"], vectors["audio/happy_0.wav"])

    client = tmp_path / "client"
    (client / "audio").mkdir(parents=True)
    for rel in paths[:4]:
        os.symlink(corpus / rel, client / rel)
    (client / "labels.csv").write_text("path,emotion\n" + "".join(f"{rel},\n" for rel in paths[:4]))
    seed_client_cache(features, paths[:4], "emobase", client / ".fedser" / "features")
    table = extract_features(client, scan_data_dir(client, LabelsConfig()), ExtractorSpec("emobase"),
                             client / ".fedser" / "features")
    assert table.extracted == 0 and table.from_cache == len([p for p in paths[:4] if p in vectors])
