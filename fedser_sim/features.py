"""Extract a corpus's features once, in parallel, into a reusable cache, and seed clients' caches.

Both caches are keyed by the SHA-256 of the audio bytes, and a client dir's files are
symlinks to the corpus files, so each client finds every vector in its own
`.fedser/features/` cache: a sweep pays for feature extraction only once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedser_client.data.labels import DataListing, LabeledFile
from fedser_client.features.base import ExtractorSpec
from fedser_client.features.cache import FeatureCache
from fedser_client.features.pipeline import ExtractionProgress, extract_features


def default_cache_dir(corpus: Path) -> Path:
    digest = hashlib.sha256(str(Path(corpus).resolve()).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "fedser" / "features" / digest


@dataclass(frozen=True)
class CorpusFeatures:
    """A corpus's vectors and content digests by corpus-relative path, and why each other file failed."""

    vectors: dict[str, np.ndarray]
    digests: dict[str, bytes]
    failed: dict[str, str]


def extract_corpus(
    corpus: Path, paths: list[str], feature_name: str, cache_dir: Path, workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> CorpusFeatures:
    listing = DataListing(files=[LabeledFile(Path(p), None) for p in paths])

    def report(state: ExtractionProgress) -> None:
        if progress:
            progress(state.done, state.total)

    table = extract_features(Path(corpus).resolve(), listing, ExtractorSpec(feature_name), cache_dir, workers, report)
    return CorpusFeatures(dict(zip(table.paths, table.features)), dict(zip(table.paths, table.digests)), table.failed)


def seed_client_cache(corpus: CorpusFeatures, paths: list[str], feature_name: str, cache_dir: Path) -> None:
    """Put the vectors of `paths` into a client's cache. Client dirs link to the corpus files, so
    the corpus digests are the client's cache keys: no file is read again."""
    cache = FeatureCache.for_extractor(cache_dir, ExtractorSpec(feature_name).identity())
    for rel in paths:
        digest = corpus.digests.get(rel)
        if digest is not None and digest not in cache:
            cache.put(digest, corpus.vectors[rel])
    cache.flush()
