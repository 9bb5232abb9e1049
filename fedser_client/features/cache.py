"""Feature cache under `<data dir>/.fedser/features/`: one file per extractor version.

Entries are keyed by relative path, size and mtime, so an edited file is re-extracted and
an interrupted extraction resumes where it stopped (the cache is saved atomically every
few hundred files).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedser_shared.fsutil import atomic_write_bytes


@dataclass(frozen=True)
class FileKey:
    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, data_dir: Path, rel: Path) -> "FileKey":
        stat = (data_dir / rel).stat()
        return cls(rel.as_posix(), stat.st_size, stat.st_mtime_ns)

    def token(self) -> str:
        return f"{self.path}\t{self.size}\t{self.mtime_ns}"


class FeatureCache:
    def __init__(self, cache_dir: Path, extractor_name: str, extractor_version: str) -> None:
        safe_version = "".join(c if c.isalnum() or c in "-_." else "_" for c in extractor_version)
        self.path = Path(cache_dir) / f"{extractor_name}-{safe_version}.npz"
        self._vectors: dict[str, np.ndarray] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            with np.load(self.path, allow_pickle=False) as archive:
                keys = json.loads(bytes(archive["keys"]).decode())
                matrix = archive["vectors"]
            self._vectors = {key: matrix[i] for i, key in enumerate(keys)}
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            self._vectors = {}  # an unreadable cache is rebuilt, never fatal

    def get(self, key: FileKey) -> np.ndarray | None:
        return self._vectors.get(key.token())

    def put(self, key: FileKey, vector: np.ndarray) -> None:
        self._vectors[key.token()] = np.asarray(vector, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._vectors)

    def save(self) -> None:
        if not self._vectors:
            return
        keys = list(self._vectors)
        buffer = io.BytesIO()
        np.savez(buffer, keys=np.frombuffer(json.dumps(keys).encode(), dtype=np.uint8), vectors=np.stack([self._vectors[k] for k in keys]))
        atomic_write_bytes(self.path, buffer.getvalue())
