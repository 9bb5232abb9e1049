"""Feature cache: vectors keyed by the SHA-256 of the audio bytes.

One folder per extractor fingerprint (name, version, settings, audio front end) under the
cache dir; inside, append-only shards `shard-*.npz`, each holding `digests` [n, 32] uint8
and `vectors` [n, dim] float32. New vectors are flushed as a fresh shard every few hundred
files or seconds (atomically), so an interrupted run loses at most that much and resumes
where it stopped; a renamed or copied file is found again by content, an edited one is not.
Many small shards are merged into one when the cache is opened.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from fedser_client.data.audio import FRONT_END
from fedser_shared.fsutil import atomic_write_bytes, atomic_write_text
from fedser_shared.logging import get_logger

log = get_logger(__name__)

DIGEST_BYTES = 32
MAX_SHARDS = 8
_READ_BLOCK = 1 << 20


def file_digest(path: Path) -> bytes:
    """SHA-256 of a file's bytes (raises OSError when it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BLOCK):
            digest.update(block)
    return digest.digest()


def fingerprint(name: str, version: str, settings: str) -> str:
    """Everything that changes a vector besides the audio bytes, hashed into a folder name."""
    text = json.dumps({"name": name, "version": version, "settings": settings, "front_end": FRONT_END}, sort_keys=True)
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class FeatureCache:
    def __init__(self, cache_dir: Path, name: str, version: str, settings: str, dim: int,
                 flush_every: int = 256, flush_seconds: float = 10.0) -> None:
        self.dir = Path(cache_dir) / fingerprint(name, version, settings)
        self.dim = dim
        self._meta = {"name": name, "version": version, "settings": settings, "dim": dim, "front_end": FRONT_END}
        self._flush_every = flush_every
        self._flush_seconds = flush_seconds
        self._vectors: dict[bytes, np.ndarray] = {}
        self._pending: dict[bytes, np.ndarray] = {}
        self._last_flush = time.monotonic()
        self._load()

    @classmethod
    def for_extractor(cls, cache_dir: Path, extractor: object, **kwargs: float) -> FeatureCache:
        """`extractor`: anything with name, version, settings and dim (an extractor or its identity)."""
        return cls(cache_dir, extractor.name, extractor.version, extractor.settings,  # type: ignore[attr-defined]
                   extractor.dim, **kwargs)  # type: ignore[attr-defined,arg-type]

    def _shards(self) -> list[Path]:
        return sorted(self.dir.glob("shard-*.npz")) if self.dir.is_dir() else []

    def _load(self) -> None:
        shards = self._shards()
        for shard in shards:
            try:
                with np.load(shard, allow_pickle=False) as archive:
                    digests, vectors = archive["digests"], archive["vectors"]
                if digests.shape[1:] != (DIGEST_BYTES,) or vectors.shape != (len(digests), self.dim):
                    raise ValueError(f"shapes {digests.shape} and {vectors.shape}")
            except (OSError, ValueError, KeyError, EOFError) as exc:  # a damaged shard is dropped, never fatal
                log.warning("feature_cache_shard_dropped", shard=str(shard), reason=str(exc))
                shard.unlink(missing_ok=True)
                continue
            for digest, vector in zip(digests, vectors):
                self._vectors[digest.tobytes()] = vector
        self._n_shards = len(shards)
        if self._n_shards > MAX_SHARDS:
            self._compact()

    def _compact(self) -> None:
        merged = self._write_shard(self._vectors) if self._vectors else None
        for shard in self._shards():
            if shard != merged:
                shard.unlink(missing_ok=True)
        self._n_shards = 1

    def _write_shard(self, entries: dict[bytes, np.ndarray]) -> Path:
        digests = np.frombuffer(b"".join(entries), dtype=np.uint8).reshape(-1, DIGEST_BYTES)
        buffer = io.BytesIO()
        np.savez(buffer, digests=digests, vectors=np.stack(list(entries.values())).astype(np.float32, copy=False))
        if not (self.dir / "meta.json").exists():
            atomic_write_text(self.dir / "meta.json", json.dumps(self._meta, indent=1))
        path = self.dir / f"shard-{time.time_ns():016x}-{os.getpid()}.npz"
        atomic_write_bytes(path, buffer.getbuffer())
        return path

    def get(self, digest: bytes) -> np.ndarray | None:
        return self._vectors.get(digest)

    def put(self, digest: bytes, vector: np.ndarray) -> None:
        vector = np.asarray(vector, dtype=np.float32)
        self._vectors[digest] = vector
        self._pending[digest] = vector
        if len(self._pending) >= self._flush_every or time.monotonic() - self._last_flush >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._write_shard(self._pending)
            self._pending = {}
            self._n_shards += 1
            if self._n_shards > 4 * MAX_SHARDS:
                self._compact()
        self._last_flush = time.monotonic()

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._vectors

    def __len__(self) -> int:
        return len(self._vectors)
