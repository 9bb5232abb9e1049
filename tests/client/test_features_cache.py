"""The feature cache: keyed by audio content and extractor fingerprint, compact, crash-safe."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fedser_client.features.cache import MAX_SHARDS, FeatureCache, file_digest


def _digest(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest()


def test_vectors_survive_a_reopen(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "emobase", "v1", "", 4)
    cache.put(_digest(1), np.arange(4, dtype=np.float32))
    cache.flush()
    again = FeatureCache(tmp_path, "emobase", "v1", "", 4)
    np.testing.assert_array_equal(again.get(_digest(1)), np.arange(4))
    assert again.get(_digest(2)) is None


def test_version_or_settings_change_gives_a_separate_cache(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "tera", "v1", "ckpt-sha256=aa", 4)
    cache.put(_digest(1), np.ones(4, np.float32))
    cache.flush()
    assert FeatureCache(tmp_path, "tera", "v2", "ckpt-sha256=aa", 4).get(_digest(1)) is None
    assert FeatureCache(tmp_path, "tera", "v1", "ckpt-sha256=bb", 4).get(_digest(1)) is None
    assert FeatureCache(tmp_path, "tera", "v1", "ckpt-sha256=aa", 4).get(_digest(1)) is not None


def test_entries_are_flushed_in_batches_so_a_crash_loses_little(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "emobase", "v1", "", 2, flush_every=3)
    for i in range(7):
        cache.put(_digest(i), np.full(2, i, np.float32))
    # no flush() call: as if the process died here
    reopened = FeatureCache(tmp_path, "emobase", "v1", "", 2)
    assert len(reopened) == 6


def test_many_shards_are_merged_on_open(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "emobase", "v1", "", 2, flush_every=1)
    for i in range(MAX_SHARDS + 3):
        cache.put(_digest(i), np.full(2, i, np.float32))
    reopened = FeatureCache(tmp_path, "emobase", "v1", "", 2)
    assert len(list(reopened.dir.glob("shard-*.npz"))) == 1
    assert len(reopened) == MAX_SHARDS + 3
    np.testing.assert_array_equal(reopened.get(_digest(5)), [5, 5])


def test_a_damaged_shard_is_dropped_not_fatal(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "emobase", "v1", "", 2)
    cache.put(_digest(1), np.ones(2, np.float32))
    cache.flush()
    (cache.dir / "shard-0000000000000000-1.npz").write_bytes(b"garbage")
    reopened = FeatureCache(tmp_path, "emobase", "v1", "", 2)
    assert reopened.get(_digest(1)) is not None
    assert not (cache.dir / "shard-0000000000000000-1.npz").exists()


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.wav").write_bytes(b"x" * 3_000_000)
    assert file_digest(tmp_path / "a.wav") == hashlib.sha256(b"x" * 3_000_000).digest()
