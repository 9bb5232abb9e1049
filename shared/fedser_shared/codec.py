"""Tensor codec: dict of arrays <-> safetensors bytes <-> ~1 MiB chunks, checked on receipt.

Memory copies are the ceiling of the transport on a small box (DESIGN §8), so every step
touches the tensor bytes at most once:

- `encode` writes each array straight into the output (one copy; no `tobytes()`);
  `encode_parts` + `chunked` let a sender stream the tensors without building the blob at all.
- `BlobLayout` places tensors in a preallocated blob, so that a new state can be computed
  straight into the bytes that will be served (no encode pass, no second copy).
- The sender slices the blob with memoryviews (no copy per chunk).
- `BlobAssembler` writes chunks into one preallocated (not zero-filled) buffer and hands that
  buffer back as is (no final copy), hashing them as they pass (`checksum.StreamHash`: XXH3
  inline; SHA-256, which costs as much as the transfer itself on a small box, on a thread).
- `decode` returns arrays that are views into the received buffer (no copy), after checking
  the safetensors header in full: dtypes, shapes, offsets inside the buffer, no gaps and no
  overlaps. Arrays decoded from a received blob (or a `bytearray`) are writable; from `bytes`,
  read-only. `prefix_length` + `read_layout` do the same checks from the header alone, for a
  receiver that checks a blob as it streams in (the server: `fedser_server/engine/incoming.py`).

The bytes are the safetensors format: the `safetensors` package reads what `encode` writes,
and `decode` reads what the package writes.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from fedser_shared.checksum import Checksum, Digest, StreamHash
from fedser_shared.errors import CorruptBlobError

CHUNK_SIZE = 1 << 20
MAX_HEADER_BYTES = 100_000_000  # the safetensors package's own limit

_DTYPE_OF_NAME: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "U64": np.dtype("<u8"), "I32": np.dtype("<i4"), "U32": np.dtype("<u4"),
    "I16": np.dtype("<i2"), "U16": np.dtype("<u2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"), "C64": np.dtype("<c8"),
}
_NAME_OF_DTYPE: dict[np.dtype, str] = {dtype: name for name, dtype in _DTYPE_OF_NAME.items()}


@dataclass(frozen=True)
class Blob:
    """Serialised tensors plus what the receiver needs to check them: the XXH3-128 digest, and
    the SHA-256 digest computed on first use (only clients that predate XXH3 need it)."""

    data: bytes | memoryview
    xxh3_128: bytes

    @property
    def total_len(self) -> int:
        return len(self.data)

    @functools.cached_property
    def sha256(self) -> bytes:
        return Checksum.SHA256.of(self.data)

    @classmethod
    def of(cls, data: bytes | memoryview) -> Blob:
        return cls(data=data, xxh3_128=Checksum.XXH3_128.of(data))

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[memoryview]:
        return iter_chunks(self.data, chunk_size)


def _little_endian(value: np.ndarray) -> np.ndarray:
    array = np.asarray(value, order="C")  # unlike ascontiguousarray, keeps 0-d arrays 0-d
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


Spec = tuple[tuple[int, ...], np.dtype]


def _layout(specs: Mapping[str, Spec], metadata: Mapping[str, str] | None = None) -> tuple[bytes, list[str]]:
    """The safetensors prefix (length + JSON header) for tensors of these shapes and dtypes, and
    their order in the data."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    # larger items first, so that every tensor starts aligned to its item size
    order = sorted(specs, key=lambda n: (-specs[n][1].itemsize, n))
    for name in order:
        shape, dtype = specs[name]
        dtype_name = _NAME_OF_DTYPE.get(dtype)
        if dtype_name is None:
            raise TypeError(f"tensor '{name}' has dtype {dtype}, which safetensors cannot hold")
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": dtype_name, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, order


def encode_parts(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> list[bytes | memoryview]:
    """The safetensors bytes of `tensors` as pieces: the header, then a view of each tensor (no copy)."""
    arrays = {name: _little_endian(value) for name, value in tensors.items()}
    prefix, order = _layout({name: (array.shape, array.dtype) for name, array in arrays.items()}, metadata)
    parts: list[bytes | memoryview] = [prefix]
    parts += [arrays[name].reshape(-1).view(np.uint8).data for name in order if arrays[name].nbytes]
    return parts


def encode(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise as safetensors, copying each tensor's bytes once, into the output."""
    return b"".join(encode_parts(tensors, metadata))


def encode_blob(tensors: Mapping[str, np.ndarray]) -> Blob:
    return Blob.of(encode(tensors))


def chunked(parts: Iterable[bytes | memoryview], chunk_size: int = CHUNK_SIZE) -> Iterator[list[memoryview]]:
    """Regroup pieces into runs of `chunk_size` bytes (the last may be shorter), as views: no copy."""
    run: list[memoryview] = []
    room = chunk_size
    for part in parts:
        view = memoryview(part).cast("B")
        while len(view):
            piece, view = view[:room], view[room:]
            run.append(piece)
            room -= len(piece)
            if room == 0:
                yield run
                run, room = [], chunk_size
    if run:
        yield run


class BlobLayout:
    """Where each tensor of a state lives in its blob: allocate a blob, then fill it in place."""

    def __init__(self, tensors: Mapping[str, np.ndarray]) -> None:
        specs = {name: (tuple(value.shape), value.dtype.newbyteorder("<")) for name, value in tensors.items()}
        self._prefix, _ = _layout(specs)
        self.total_len = len(self._prefix) + sum(math.prod(shape) * dtype.itemsize for shape, dtype in specs.values())

    @property
    def prefix(self) -> bytes:
        """The blob's first bytes: the header's length and the header."""
        return self._prefix

    def allocate(self) -> tuple[memoryview, dict[str, np.ndarray]]:
        """An uninitialised blob with its header written, and writable views of its tensors."""
        buffer = np.empty(self.total_len, np.uint8)  # not zero-filled: every byte is written next
        buffer[: len(self._prefix)] = np.frombuffer(self._prefix, np.uint8)
        view = buffer.data
        return view, decode(view)

    def write(self, tensors: Mapping[str, np.ndarray]) -> tuple[memoryview, dict[str, np.ndarray]]:
        """A blob holding a copy of `tensors`, and views of its tensors."""
        buffer, views = self.allocate()
        for name, view in views.items():
            view[...] = tensors[name]
        return buffer, views


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise CorruptBlobError(f"cannot parse tensor blob: tensor '{key}' appears twice in the header")
        result[key] = value
    return result


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a blob: where its bytes lie in the blob (absolute offsets) and what they hold."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def prefix_length(view: memoryview, total_len: int, max_header: int = MAX_HEADER_BYTES) -> int:
    """The length of a blob's prefix (8 + its JSON header) from the blob's first 8 bytes."""
    if len(view) < 8:
        raise CorruptBlobError(f"cannot parse tensor blob: {len(view)} bytes is shorter than a safetensors header")
    (header_len,) = struct.unpack_from("<Q", view, 0)
    if header_len > total_len - 8:
        raise CorruptBlobError(f"cannot parse tensor blob: header length {header_len} exceeds the blob")
    if header_len > max_header:
        raise CorruptBlobError(f"cannot parse tensor blob: header length {header_len} exceeds the limit of {max_header} bytes")
    return 8 + int(header_len)


def read_layout(prefix: memoryview, total_len: int) -> list[TensorEntry]:
    """The tensors of a blob of `total_len` bytes, in data order, from its prefix alone: checked
    in full (dtypes, shapes, offsets inside the data, no gap, no overlap, no duplicate)."""
    try:
        header = json.loads(bytes(prefix[8:]), object_pairs_hook=_refuse_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptBlobError(f"cannot parse tensor blob: header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CorruptBlobError("cannot parse tensor blob: header is not a JSON object")
    data_start = len(prefix)
    data_len = total_len - data_start
    entries = [_entry(name, entry, data_len) for name, entry in header.items() if name != "__metadata__"]
    entries.sort(key=lambda e: (e.begin, e.end))
    # the tensors must tile the data exactly: no gap, no overlap, nothing after the last one
    end = 0
    for entry in entries:
        if entry.begin != end:
            raise CorruptBlobError(f"cannot parse tensor blob: tensor '{entry.name}' starts at {entry.begin}, expected {end}")
        end = entry.end
    if end != data_len:
        raise CorruptBlobError(f"cannot parse tensor blob: {data_len - end} bytes after the last tensor")
    return [TensorEntry(e.name, e.dtype, e.shape, data_start + e.begin, data_start + e.end) for e in entries]


def _entry(name: str, entry: object, data_len: int) -> TensorEntry:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CorruptBlobError(f"cannot parse tensor blob: tensor '{name}' needs exactly dtype, shape and data_offsets")
    dtype = _DTYPE_OF_NAME.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
    if dtype is None:
        raise CorruptBlobError(f"cannot parse tensor blob: tensor '{name}' has unsupported dtype {entry['dtype']!r}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise CorruptBlobError(f"cannot parse tensor blob: tensor '{name}' has a malformed shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_len):
        raise CorruptBlobError(f"cannot parse tensor blob: tensor '{name}' has offsets {offsets!r} outside the data")
    if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
        raise CorruptBlobError(f"cannot parse tensor blob: tensor '{name}' of shape {shape} does not fill its offsets")
    return TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])


def decode(data: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
    """Parse safetensors bytes into arrays that are views into `data` (no copy)."""
    view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else memoryview(data)
    entries = read_layout(view[: prefix_length(view, len(view))], len(view))
    tensors = {}
    for entry in entries:
        count = (entry.end - entry.begin) // entry.dtype.itemsize
        array = np.frombuffer(view, entry.dtype, count, entry.begin) if count else np.empty(0, entry.dtype)
        tensors[entry.name] = array.reshape(entry.shape)
    return tensors


def iter_chunks(data: bytes | bytearray | memoryview, chunk_size: int = CHUNK_SIZE) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        yield view[start : start + chunk_size]


class BlobAssembler:
    """Collects chunks into one buffer, refusing more bytes than announced."""

    def __init__(self, total_len: int, expected: Digest | bytes) -> None:
        """`expected` is the announced digest; bare bytes are a SHA-256 digest."""
        if total_len <= 0:
            raise CorruptBlobError(f"announced blob length {total_len} must be positive")
        self._expected = expected if isinstance(expected, Digest) else Digest(Checksum.SHA256, expected)
        # np.empty, not bytearray(n): no zero-fill pass over memory that the chunks overwrite anyway
        self._view = np.empty(total_len, np.uint8).data
        self._hasher = StreamHash(self._expected.kind)
        self._received = 0

    def __enter__(self) -> BlobAssembler:
        return self

    def __exit__(self, *exc: object) -> None:
        self._hasher.close()

    @property
    def received(self) -> int:
        return self._received

    def feed(self, chunk: bytes | memoryview) -> None:
        end = self._received + len(chunk)
        if end > len(self._view):
            raise CorruptBlobError(f"received more than the announced {len(self._view)} bytes")
        self._view[self._received : end] = chunk
        self._hasher.update(self._view[self._received : end])
        self._received = end

    def finish(self) -> memoryview:
        """The checked blob: a writable view of the receive buffer itself, handed over without a copy."""
        if self._received != len(self._view):
            raise CorruptBlobError(f"blob truncated: received {self._received} of {len(self._view)} bytes")
        if not self._hasher.matches(self._expected):
            raise CorruptBlobError(f"blob checksum mismatch ({self._expected.kind.value})")
        return self._view


def assemble(chunks: Iterable[bytes | memoryview], total_len: int, expected: Digest | bytes) -> memoryview:
    with BlobAssembler(total_len, expected) as assembler:
        for chunk in chunks:
            assembler.feed(chunk)
        return assembler.finish()
