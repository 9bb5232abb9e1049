"""Safetensors files that carry their own digest (the server's checkpoint, a client's c_i): a file
that a flipped bit, a torn write or a stray edit changed is refused by name instead of being used.

The digest is XXH3-128 (metadata key `xxh3_128`, hex) over the header as canonical JSON (the
tensor table and every other metadata entry) followed by the tensor bytes, so the round number in
a checkpoint's metadata is covered as well as the weights. Files written before digests existed
have none: they are read with `Sealed.digest_checked` False. Either way every floating-point
tensor must be finite: a NaN or infinity in saved state is refused, never trained on.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from fedser_shared import codec
from fedser_shared.errors import CorruptBlobError, CorruptStateError, StateError

DIGEST_KEY = "xxh3_128"
_METADATA = "__metadata__"


@dataclass(frozen=True)
class Sealed:
    tensors: dict[str, np.ndarray]  # writable views into one buffer read from the file
    metadata: dict[str, str]  # without the digest
    digest_checked: bool  # False for a file written before digests existed


def seal(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> list[bytes | memoryview]:
    """The file's bytes in parts (header with its digest, then a view of each tensor: no copy)."""
    parts = codec.encode_parts(tensors, metadata)
    return [sealed_header(tensors, metadata, parts[1:]), *parts[1:]]


def sealed_header(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str],
                  data: Iterable[bytes | memoryview]) -> bytes:
    """The header, digest included, of a file of `tensors` whose bytes (in the header's order) are
    `data`: for a state whose bytes are read from elsewhere (a file) rather than held in memory."""
    if DIGEST_KEY in metadata:
        raise ValueError(f"metadata key {DIGEST_KEY!r} is reserved for the digest")
    unsealed = codec.encode_parts(tensors, metadata)[0]
    digest = _digest(_parse_header(memoryview(unsealed)), data)
    return bytes(codec.encode_parts(tensors, {**metadata, DIGEST_KEY: digest})[0])


class SealWriter:
    """The header of a sealed file whose tensor bytes pass by once (read from one file while
    written to another): write `placeholder` first, pass the bytes through `update` as they are
    written, then write `header()` over the placeholder (the same length: the digest is
    fixed-width hex)."""

    def __init__(self, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
        if DIGEST_KEY in metadata:
            raise ValueError(f"metadata key {DIGEST_KEY!r} is reserved for the digest")
        self._tensors, self._metadata = tensors, dict(metadata)
        unsealed = codec.encode_parts(tensors, metadata)[0]
        self._hasher = xxhash.xxh3_128()
        self._hasher.update(_canonical(_parse_header(memoryview(unsealed))))
        self.placeholder = self._header("0" * (2 * self._hasher.digest_size))

    def update(self, data: bytes | memoryview) -> None:
        self._hasher.update(data)

    def header(self) -> bytes:
        header = self._header(self._hasher.hexdigest())
        assert len(header) == len(self.placeholder)
        return header

    def _header(self, digest: str) -> bytes:
        return bytes(codec.encode_parts(self._tensors, {**self._metadata, DIGEST_KEY: digest})[0])


def read_sealed(path: Path, what: str) -> Sealed:
    """The tensors and metadata of a sealed file (or of one written before digests), checked.
    `what` names the file in errors ("checkpoint", "local state"); a missing file is the caller's
    business (FileNotFoundError passes through)."""
    try:
        with open(path, "rb") as handle:
            buffer = bytearray(handle.read())  # one read: a file replaced meanwhile cannot mix two versions
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise StateError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    try:
        return _check(memoryview(buffer))
    except CorruptBlobError as exc:
        raise CorruptStateError(f"the {what} {path} is corrupt: {_detail(exc)}") from None


def _check(view: memoryview) -> Sealed:
    prefix_len = codec.prefix_length(view, len(view))
    header = _parse_header(view[:prefix_len])
    found = header.get(_METADATA) or {}
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise CorruptBlobError("its metadata is not a map of strings")
    metadata = {k: v for k, v in found.items() if k != DIGEST_KEY}
    expected = found.get(DIGEST_KEY)
    tensors = codec.decode(view)
    if expected is not None:
        if _digest(header, [view[prefix_len:]]) != expected:
            raise CorruptBlobError("its checksum does not match its contents (changed or damaged after it was written)")
    for name, value in tensors.items():
        if value.dtype.kind in "fc" and not np.isfinite(value).all():
            raise CorruptBlobError(f"tensor '{name}' holds NaN or infinite values")
    return Sealed(tensors, metadata, expected is not None)


def _parse_header(prefix: memoryview) -> dict[str, Any]:
    (length,) = struct.unpack_from("<Q", prefix, 0)
    try:
        header = json.loads(bytes(prefix[8 : 8 + length]))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptBlobError(f"cannot parse tensor blob: header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CorruptBlobError("cannot parse tensor blob: header is not a JSON object")
    return header


def _digest(header: Mapping[str, Any], data: Iterable[bytes | memoryview]) -> str:
    """Over the header without the digest, as canonical JSON, then the tensor bytes."""
    hasher = xxhash.xxh3_128()
    hasher.update(_canonical(header))
    for part in data:
        hasher.update(part)
    return str(hasher.hexdigest())


def _canonical(header: Mapping[str, Any]) -> bytes:
    """The header without the digest, as canonical JSON: what the digest covers before the data."""
    table = dict(header)
    table[_METADATA] = {k: v for k, v in (header.get(_METADATA) or {}).items() if k != DIGEST_KEY}
    return json.dumps(table, sort_keys=True, separators=(",", ":")).encode()


def _detail(exc: CorruptBlobError) -> str:
    return str(exc).removeprefix("cannot parse tensor blob: ")
