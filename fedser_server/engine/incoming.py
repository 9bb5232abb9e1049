"""An update as it streams in (DESIGN §3.4): hashed, checked and parked on disk chunk by chunk.

The server never holds a whole update in memory. Each chunk is hashed, checked (the header's
tensor names, shapes and dtypes against the expected update as soon as the header is in, then
every value finite) and written to a `SpillFile`. A problem found mid-stream is reported only
once the checksum trailer matched, so that a byte flipped in transit reads as a checksum error,
not as a malformed update. Only a `CheckedUpdate` reaches the strategy, read back block by block.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from fedser_server.core.strategy import TensorSpec, check_finite, check_layout
from fedser_server.state.spill import SpillFile
from fedser_shared import codec
from fedser_shared.checksum import Checksum, Digest, StreamHash
from fedser_shared.codec import TensorEntry
from fedser_shared.errors import CorruptBlobError, FedserError, InvalidUpdateError

MAX_HEADER_BYTES = 1 << 20  # an update's JSON header names a few tensors: far below this
READ_BLOCK_BYTES = 1 << 21


class CheckedUpdate:
    """A received update whose checksum, layout and values passed; its bytes are on disk."""

    def __init__(self, spill: SpillFile | MemoryPark, layout: list[TensorEntry], norm: float | None = None) -> None:
        self._spill, self._layout = spill, layout
        self.norm = norm  # L2 norm of the tensors the receiver was asked to measure, if any

    def runs(self, block_bytes: int = READ_BLOCK_BYTES) -> Iterator[tuple[str, int, np.ndarray]]:
        """(tensor name, first flat element, values) for every block of every tensor: a view of a
        small update parked in memory, else read into one reused buffer. Each run is valid until
        the next one is produced."""
        buffer = np.empty(block_bytes, np.uint8)
        for entry in self._layout:
            step = block_bytes // entry.dtype.itemsize * entry.dtype.itemsize
            for offset in range(entry.begin, entry.end, step):
                size = min(step, entry.end - offset)
                parked = self._spill.view_at(offset, size) if isinstance(self._spill, MemoryPark) else None
                if parked is None:
                    self._spill.read_at(offset, buffer.data[:size])
                    parked = buffer.data[:size]
                yield entry.name, (offset - entry.begin) // entry.dtype.itemsize, np.frombuffer(parked, entry.dtype)

    def discard(self) -> None:
        self._spill.close()


class MemoryPark:
    """A small update's bytes kept in memory: `SpillFile`'s interface without the file. It keeps
    the received chunks themselves (views of the messages grpc delivered, which nothing changes
    afterwards), not a copy of them."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._chunks: list[memoryview] = []
        self._written = 0

    def write(self, data: memoryview) -> None:
        self._starts.append(self._written)
        self._chunks.append(data)
        self._written += len(data)

    def view_at(self, offset: int, size: int) -> memoryview | None:
        """The bytes [offset, offset + size) as a view of the chunk that holds them all; None when they span chunks."""
        index = bisect.bisect_right(self._starts, offset) - 1
        start = offset - self._starts[index]
        chunk = self._chunks[index]
        return chunk[start : start + size] if start + size <= len(chunk) else None

    def read_at(self, offset: int, into: memoryview) -> None:
        index = bisect.bisect_right(self._starts, offset) - 1
        while len(into):
            chunk = self._chunks[index][offset - self._starts[index] :]
            take = min(len(chunk), len(into))
            into[:take] = chunk[:take]
            into, offset, index = into[take:], offset + take, index + 1

    def close(self) -> None:
        self._starts, self._chunks = [], []


class IncomingUpdate:
    def __init__(self, total_len: int, expected: Mapping[str, TensorSpec], spill_dir: Path | None,
                 measure_prefix: str | None = None, checksum: Checksum = Checksum.SHA256, all_zero: bool = False) -> None:
        """`total_len` is positive (checked at the edge). `spill_dir` None parks the update in memory
        (a small one: no file to create, write and read back). `all_zero`: every value must be 0
        (an empty participation, n_samples = 0, carries zero tensors)."""
        self.total_len = total_len
        self._all_zero = all_zero
        self._expected = expected
        self._hasher = StreamHash(checksum)
        self._received = 0
        self._prefix = bytearray()
        self._prefix_len: int | None = None
        self._layout: list[TensorEntry] | None = None
        self._tensor = 0       # index in the layout of the tensor the next data byte belongs to
        self._carry = b""      # the start of a value cut by a chunk boundary
        self._problem: FedserError | None = None
        self._measure = measure_prefix  # tensors whose squared values are summed as they pass
        self._squares = 0.0
        self._spill: SpillFile | MemoryPark | None = SpillFile(spill_dir) if spill_dir is not None else MemoryPark()

    def __enter__(self) -> IncomingUpdate:
        return self

    def __exit__(self, *exc: object) -> None:
        self._hasher.close()
        if self._spill is not None:  # not handed on: refused, or the stream broke
            self._spill.close()

    @property
    def received(self) -> int:
        return self._received

    def feed(self, chunk: memoryview) -> None:
        end = self._received + len(chunk)
        if end > self.total_len:
            raise CorruptBlobError(f"received more than the announced {self.total_len} bytes")
        self._hasher.update(chunk)
        if self._problem is None:
            try:
                self._check(chunk)
            except FedserError as exc:
                self._problem = exc
            else:
                assert self._spill is not None
                self._spill.write(chunk)
        self._received = end

    def finish(self, expected: Digest | bytes) -> CheckedUpdate:
        """The checked update, handed on with its file; raises what was wrong with it otherwise.
        `expected` is the trailer's digest; bare bytes are a SHA-256 digest."""
        if self._received != self.total_len:
            raise CorruptBlobError(f"blob truncated: received {self._received} of {self.total_len} bytes")
        if not isinstance(expected, Digest):
            expected = Digest(Checksum.SHA256, expected)
        if not self._hasher.matches(expected):
            raise CorruptBlobError(f"blob checksum mismatch ({expected.kind.value})")
        if self._problem is not None:
            raise self._problem
        assert self._spill is not None and self._layout is not None
        norm = float(np.sqrt(self._squares)) if self._measure is not None else None
        update, self._spill = CheckedUpdate(self._spill, self._layout, norm), None
        return update

    def _check(self, chunk: memoryview) -> None:
        position = self._received + len(chunk)
        if self._layout is None:
            chunk = self._read_prefix(chunk)
        position -= len(chunk)  # where the data left in the chunk starts in the blob
        while len(chunk):
            assert self._layout is not None  # it tiles the announced length, which bounds the chunks
            entry = self._layout[self._tensor]
            take = min(len(chunk), entry.end - position)
            self._check_values(entry, chunk[:take])
            chunk, position = chunk[take:], position + take
            if position == entry.end:
                self._tensor += 1

    def _check_values(self, entry: TensorEntry, piece: memoryview) -> None:
        if entry.dtype.kind not in "fc":
            return
        size = entry.dtype.itemsize
        if self._carry:
            fill = bytes(piece[: size - len(self._carry)])
            self._carry, piece = self._carry + fill, piece[len(fill):]
            if len(self._carry) < size:
                return
            self._check_run(entry, np.frombuffer(self._carry, entry.dtype))
        whole = len(piece) - len(piece) % size
        self._check_run(entry, np.frombuffer(piece[:whole], entry.dtype))
        self._carry = bytes(piece[whole:])

    def _check_run(self, entry: TensorEntry, values: np.ndarray) -> None:
        measured = self._measure is not None and entry.name.startswith(self._measure)
        squares = float(np.vdot(values, values).real) if measured else math.nan
        if not math.isfinite(squares):  # a NaN or an infinity makes the sum of squares non-finite: one pass, not two
            check_finite(entry.name, values)
        if self._all_zero and values.any():
            raise InvalidUpdateError(f"an empty participation (n_samples = 0) must carry zero tensors; "
                                     f"{entry.name} holds non-zero values")
        if measured:
            self._squares += squares

    def _read_prefix(self, chunk: memoryview) -> memoryview:
        """Collect the length + JSON header; once complete, check it. Returns the rest of the chunk."""
        while self._layout is None:
            target = 8 if self._prefix_len is None else self._prefix_len
            take = target - len(self._prefix)
            self._prefix += chunk[:take]
            chunk = chunk[take:]
            if len(self._prefix) < target:
                return chunk
            if self._prefix_len is None:
                self._prefix_len = codec.prefix_length(memoryview(bytes(self._prefix)), self.total_len, MAX_HEADER_BYTES)
            else:
                entries = codec.read_layout(memoryview(bytes(self._prefix)), self.total_len)
                check_layout({e.name: TensorSpec(e.shape, e.dtype) for e in entries}, self._expected)
                self._layout = [e for e in entries if e.end > e.begin]
        return chunk
