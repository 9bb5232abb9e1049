"""Turn a data listing into a feature matrix: cached, skipping bad files with a count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedser_client.data.audio import load_audio
from fedser_client.data.labels import DataListing
from fedser_client.features.base import FeatureExtractor
from fedser_client.features.cache import FeatureCache, FileKey
from fedser_shared.errors import DataError
from fedser_shared.logging import get_logger

log = get_logger(__name__)
SAVE_EVERY = 200


@dataclass
class FeatureTable:
    features: np.ndarray          # [n, dim] float32
    labels: np.ndarray            # [n] int64, -1 = unlabeled
    paths: list[str]
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason
    from_cache: int = 0


def extract_features(
    data_dir: Path,
    listing: DataListing,
    extractor: FeatureExtractor,
    cache_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> FeatureTable:
    cache = FeatureCache(cache_dir, extractor.name, extractor.version)
    vectors, labels, paths, failed = [], [], [], {}
    hits, dirty = 0, 0
    total = len(listing.files)
    for done, item in enumerate(listing.files, start=1):
        rel = item.path.as_posix()
        try:
            key = FileKey.of(data_dir, item.path)
            vector = cache.get(key)
            if vector is None:
                vector = extractor.extract(load_audio(data_dir / item.path))
                if vector.shape != (extractor.dim,):
                    raise DataError(f"{rel}: extractor returned shape {vector.shape}, expected ({extractor.dim},)")
                cache.put(key, vector)
                dirty += 1
            else:
                hits += 1
        except (DataError, OSError) as exc:
            failed[rel] = str(exc)
            log.warning("audio_file_skipped", path=rel, reason=str(exc))
            continue
        vectors.append(vector)
        labels.append(-1 if item.label is None else item.label)
        paths.append(rel)
        if dirty >= SAVE_EVERY:
            cache.save()
            dirty = 0
        if progress is not None:
            progress(done, total)
    if dirty:
        cache.save()
    if not vectors:
        raise DataError(f"none of the {total} audio files under {data_dir} could be decoded")
    return FeatureTable(np.stack(vectors).astype(np.float32), np.asarray(labels, np.int64), paths, failed, hits)
