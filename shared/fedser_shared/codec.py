"""Tensor codec: dict of arrays <-> safetensors bytes <-> ~1 MiB chunks, checked on receipt.

The sender serialises once and slices the bytes with memoryviews (no copies per chunk);
the receiver writes chunks into one preallocated buffer, hashing as they arrive, and only
parses the blob after its total length and SHA-256 match the header.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load as _st_load
from safetensors.numpy import save as _st_save

from fedser_shared.errors import CorruptBlobError

CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class Blob:
    """Serialised tensors plus what the receiver needs to check them."""

    data: bytes
    sha256: bytes

    @property
    def total_len(self) -> int:
        return len(self.data)

    @classmethod
    def of(cls, data: bytes) -> "Blob":
        return cls(data=data, sha256=hashlib.sha256(data).digest())

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[memoryview]:
        return iter_chunks(self.data, chunk_size)


def encode(tensors: Mapping[str, np.ndarray]) -> bytes:
    contiguous = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    return _st_save(contiguous)


def encode_blob(tensors: Mapping[str, np.ndarray]) -> Blob:
    return Blob.of(encode(tensors))


def decode(data: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    try:
        return dict(_st_load(bytes(data)))
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise CorruptBlobError(f"cannot parse tensor blob: {exc}") from exc


def iter_chunks(data: bytes | bytearray | memoryview, chunk_size: int = CHUNK_SIZE) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        yield view[start : start + chunk_size]


class BlobAssembler:
    """Collects chunks into one buffer, refusing more bytes than announced or allowed."""

    def __init__(self, total_len: int, sha256: bytes, max_len: int | None = None) -> None:
        if total_len <= 0:
            raise CorruptBlobError(f"announced blob length {total_len} must be positive")
        if max_len is not None and total_len > max_len:
            raise CorruptBlobError(f"announced blob length {total_len} exceeds the limit of {max_len} bytes")
        if len(sha256) != 32:
            raise CorruptBlobError(f"sha256 must be 32 bytes, got {len(sha256)}")
        self._buffer = bytearray(total_len)
        self._expected_sha = sha256
        self._hasher = hashlib.sha256()
        self._received = 0

    @property
    def received(self) -> int:
        return self._received

    def feed(self, chunk: bytes | memoryview) -> None:
        end = self._received + len(chunk)
        if end > len(self._buffer):
            raise CorruptBlobError(f"received more than the announced {len(self._buffer)} bytes")
        self._buffer[self._received : end] = chunk
        self._hasher.update(chunk)
        self._received = end

    def finish(self) -> bytes:
        if self._received != len(self._buffer):
            raise CorruptBlobError(f"blob truncated: received {self._received} of {len(self._buffer)} bytes")
        if self._hasher.digest() != self._expected_sha:
            raise CorruptBlobError("blob checksum mismatch (sha256)")
        return bytes(self._buffer)


def assemble(chunks: Iterator[bytes], total_len: int, sha256: bytes, max_len: int | None = None) -> bytes:
    assembler = BlobAssembler(total_len, sha256, max_len)
    for chunk in chunks:
        assembler.feed(chunk)
    return assembler.finish()
