"""Extract a corpus's features once, in parallel, into a reusable cache, and seed clients' caches.

Both caches are keyed by the SHA-256 of the audio bytes, and a client dir's files are
symlinks to the corpus files, so each client finds every vector in its own
`.fedser/features/` cache: a sweep pays for feature extraction only once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedser_client.data.labels import DataListing, LabeledFile
from fedser_client.features.base import ExtractorSpec
from fedser_client.features.cache import FeatureCache, file_digest
from fedser_client.features.pipeline import ExtractionProgress, extract_features


def default_cache_dir(corpus: Path) -> Path:
    digest = hashlib.sha256(str(Path(corpus).resolve()).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "fedser" / "features" / digest


def extract_corpus(
    corpus: Path, paths: list[str], feature_name: str, cache_dir: Path, workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Vectors by corpus-relative path, and the reason for each file that could not be used."""
    listing = DataListing(files=[LabeledFile(Path(p), None) for p in paths])

    def report(state: ExtractionProgress) -> None:
        if progress:
            progress(state.done, state.total)

    table = extract_features(Path(corpus).resolve(), listing, ExtractorSpec(feature_name), cache_dir, workers, report)
    return dict(zip(table.paths, table.features)), table.failed


def seed_client_cache(client_dir: Path, vectors: dict[str, np.ndarray], feature_name: str, cache_dir: Path) -> None:
    cache = FeatureCache.for_extractor(cache_dir, ExtractorSpec(feature_name).identity())
    for rel, vector in vectors.items():
        try:
            digest = file_digest(Path(client_dir) / rel)
        except OSError:
            continue  # the client will report the file itself
        if digest not in cache:
            cache.put(digest, vector)
    cache.flush()
