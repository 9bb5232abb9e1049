"""End-to-end checksums of blobs (models and updates): which algorithm, and hashing as chunks pass.

XXH3-128 is what fedser sends: at several GB/s it costs ~1/10 of SHA-256 on the same bytes, which
on a small box was as much as the transfer itself (benchmarks/results/transport.md). It detects
corruption in transit or at rest, not tampering: that is TLS's job (docs/security.md). SHA-256
stays accepted (and served in every model header) for clients that predate XXH3.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import xxhash

from fedser_shared.errors import CorruptBlobError


class _Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def digest(self) -> bytes: ...


class Checksum(Enum):
    SHA256 = "sha256"
    XXH3_128 = "xxh3_128"

    @property
    def digest_size(self) -> int:
        return 32 if self is Checksum.SHA256 else 16

    def new(self) -> _Hasher:
        return hashlib.sha256() if self is Checksum.SHA256 else xxhash.xxh3_128()

    def of(self, data: bytes | memoryview) -> bytes:
        hasher = self.new()
        hasher.update(data)
        return bytes(hasher.digest())


@dataclass(frozen=True)
class Digest:
    """An expected digest, as a header or trailer announced it."""

    kind: Checksum
    value: bytes

    def __post_init__(self) -> None:
        if len(self.value) != self.kind.digest_size:
            raise CorruptBlobError(f"{self.kind.value} digest must be {self.kind.digest_size} bytes, got {len(self.value)}")

    @classmethod
    def preferred(cls, sha256: bytes, xxh3_128: bytes) -> Digest:
        """The digest to check of a model header that may carry both: XXH3 when present."""
        return cls(Checksum.XXH3_128, xxh3_128) if xxh3_128 else cls(Checksum.SHA256, sha256)


class StreamHash:
    """A digest of a stream of chunks. SHA-256 runs on a thread of its own (hashlib releases the
    GIL, so hashing overlaps with receiving and checking the next chunks; at most `backlog` chunks
    wait, referenced until hashed); XXH3 is fast enough to run inline, where a thread hand-off
    would cost more than the hash. Call `digest()` or `close()` once done."""

    def __init__(self, kind: Checksum = Checksum.XXH3_128, backlog: int = 4) -> None:
        self.kind = kind
        self._hasher = kind.new()
        self._chunks: queue.Queue[bytes | memoryview | None] | None = None
        self._thread: threading.Thread | None = None
        if kind is Checksum.SHA256:
            self._chunks = queue.Queue(backlog)
            self._thread = threading.Thread(target=self._run, name="fedser-sha256", daemon=True)
            self._thread.start()

    def update(self, chunk: bytes | memoryview) -> None:
        if self._chunks is None:
            self._hasher.update(chunk)
        else:
            self._chunks.put(chunk)

    def digest(self) -> bytes:
        self.close()
        return bytes(self._hasher.digest())

    def matches(self, expected: Digest) -> bool:
        return expected.kind is self.kind and self.digest() == expected.value

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            assert self._chunks is not None
            self._chunks.put(None)
            self._thread.join()

    def _run(self) -> None:
        assert self._chunks is not None
        while (chunk := self._chunks.get()) is not None:
            self._hasher.update(chunk)
