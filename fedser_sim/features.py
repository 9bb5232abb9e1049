"""Extract a corpus's features once, in parallel, into a reusable cache, and seed clients' caches.

Clients in a simulation then find every vector in their own `.fedser/features/` cache
(keyed by relative path, size and mtime; symlinks resolve to the corpus file), so a
sweep pays for feature extraction only once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from fedser_client.data.audio import load_audio
from fedser_client.features.base import make_extractor
from fedser_client.features.cache import FeatureCache, FileKey
from fedser_shared.errors import DataError

_worker_extractor = None


def default_cache_dir(corpus: Path) -> Path:
    digest = hashlib.sha256(str(Path(corpus).resolve()).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "fedser" / "features" / digest


def _init_worker(name: str) -> None:
    global _worker_extractor
    import torch

    torch.set_num_threads(1)
    _worker_extractor = make_extractor(name)


def _extract_one(path: str) -> tuple[str, np.ndarray | None, str]:
    try:
        return path, _worker_extractor.extract(load_audio(Path(path))), ""  # type: ignore[union-attr]
    except DataError as exc:
        return path, None, str(exc)


def extract_corpus(
    corpus: Path, paths: list[str], feature_name: str, cache_dir: Path, workers: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    corpus = Path(corpus).resolve()
    extractor = make_extractor(feature_name)
    cache = FeatureCache(cache_dir, extractor.name, extractor.version)
    vectors: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    todo: list[str] = []
    keys = {p: FileKey.of(corpus, Path(p)) for p in paths}
    for p in paths:
        hit = cache.get(keys[p])
        if hit is None:
            todo.append(p)
        else:
            vectors[p] = hit
    done = len(vectors)
    if progress:
        progress(done, len(paths))
    if todo:
        with ProcessPoolExecutor(max_workers=max(1, workers), initializer=_init_worker, initargs=(feature_name,)) as pool:
            for i, (full, vector, error) in enumerate(pool.map(_extract_one, [str(corpus / p) for p in todo], chunksize=8)):
                rel = todo[i]
                if vector is None:
                    failed[rel] = error
                else:
                    vectors[rel] = vector
                    cache.put(keys[rel], vector)
                done += 1
                if progress:
                    progress(done, len(paths))
                if i % 500 == 499:
                    cache.save()
        cache.save()
    return vectors, failed


def seed_client_cache(client_dir: Path, vectors: dict[str, np.ndarray], feature_name: str, cache_dir: Path) -> None:
    extractor = make_extractor(feature_name)
    cache = FeatureCache(cache_dir, extractor.name, extractor.version)
    for rel, vector in vectors.items():
        if (client_dir / rel).exists():
            cache.put(FileKey.of(client_dir, Path(rel)), vector)
    cache.save()
