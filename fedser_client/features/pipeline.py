"""Turn a data listing into a feature matrix: hash, look up the cache, extract the rest.

Files are identified by the SHA-256 of their bytes, so identical files are extracted once,
and a file is extracted again only when its content changed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedser_client.data.labels import DataListing
from fedser_client.features.base import ExtractorSpec, FeatureExtractor
from fedser_client.features.cache import FeatureCache, file_digest
from fedser_client.features.workers import run_extraction
from fedser_shared.errors import DataError
from fedser_shared.logging import get_logger

log = get_logger(__name__)


@dataclass
class ExtractionProgress:
    total: int              # files to go through
    done: int = 0           # files through (from cache, extracted or skipped)
    from_cache: int = 0
    extracted: int = 0
    skipped: int = 0
    audio_seconds: float = 0.0  # audio decoded and extracted in this run


@dataclass
class FeatureTable:
    features: np.ndarray          # [n, dim] float32
    labels: np.ndarray            # [n] int64, -1 = unlabeled
    paths: list[str]
    digests: list[bytes]          # SHA-256 of each row's audio bytes (the cache key)
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    from_cache: int = 0
    extracted: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0


def extract_features(
    data_dir: Path,
    listing: DataListing,
    spec: ExtractorSpec,
    cache_dir: Path,
    workers: int = 1,
    progress: Callable[[ExtractionProgress], None] | None = None,
    extractor: FeatureExtractor | None = None,
) -> FeatureTable:
    """Vectors for every usable file of the listing, in listing order.

    Nothing is built when every vector is cached. Otherwise `extractor` (built from `spec`
    when not given) checks the model loads and, with one worker, does the work; worker
    processes build their own from `spec`."""
    started = time.perf_counter()
    data_dir = Path(data_dir)
    identity = spec.identity() if extractor is None else extractor
    cache = FeatureCache.for_extractor(cache_dir, identity)
    state = ExtractionProgress(total=len(listing.files))
    failed: dict[str, str] = {}
    digest_of: dict[str, bytes] = {}
    paths_of: dict[bytes, list[str]] = defaultdict(list)
    for item in listing.files:
        rel = item.path.as_posix()
        try:
            digest = file_digest(data_dir / item.path)
        except OSError as exc:
            failed[rel] = f"cannot read file ({exc.strerror})"
            state.skipped += 1
            continue
        digest_of[rel] = digest
        if digest in cache:
            state.from_cache += 1
        else:
            paths_of[digest].append(rel)  # identical files are extracted once
    state.done = state.from_cache + state.skipped
    if progress:
        progress(state)

    jobs = [(digest, data_dir / rels[0]) for digest, rels in paths_of.items()]
    outcomes = run_extraction(jobs, spec, min(workers, len(jobs)), extractor or spec.build()) if jobs else iter(())
    try:
        for outcome in outcomes:
            rels = paths_of[outcome.key]  # type: ignore[index]
            if outcome.vector is None:
                for rel in rels:
                    failed[rel] = outcome.reason
                    log.warning("audio_file_skipped", path=rel, reason=outcome.reason)
                state.skipped += len(rels)
            else:
                cache.put(outcome.key, outcome.vector)  # type: ignore[arg-type]
                state.extracted += len(rels)
                state.audio_seconds += outcome.seconds * len(rels)
            state.done += len(rels)
            if progress:
                progress(state)
    finally:
        cache.flush()  # also on Ctrl-C: the next run resumes from here

    vectors, labels, paths, digests = [], [], [], []
    for item in listing.files:
        rel = item.path.as_posix()
        vector = cache.get(digest_of[rel]) if rel in digest_of else None
        if vector is None:
            continue
        vectors.append(vector)
        labels.append(-1 if item.label is None else item.label)
        paths.append(rel)
        digests.append(digest_of[rel])
    if not vectors:
        reasons = sorted(set(failed.values()))
        raise DataError(f"none of the {len(listing.files)} audio files under {data_dir} could be used"
                        + (f" (e.g. {reasons[0]})" if reasons else ""))
    return FeatureTable(np.stack(vectors).astype(np.float32), np.asarray(labels, np.int64), paths, digests, failed,
                        state.from_cache, state.extracted, state.audio_seconds, time.perf_counter() - started)
