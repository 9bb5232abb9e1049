"""Model-sized arrays that cost the server disk and page cache instead of resident memory.

An unnamed file in the state dir, mapped shared: a page belongs to the process only while it is
mapped in, and `evict` hands the pages of a byte range back (their bytes stay in the file, so a
later read faults them in again). The server touches a few MiB at a time and evicts them once
done, so its resident memory does not hold the model; the kernel keeps the file's pages cached
and may write them out under memory pressure, which it cannot do with anonymous memory. An
unnamed file leaves nothing behind after a crash.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fedser_shared.errors import StateError

READ_BLOCK_BYTES = 1 << 21


class MappedFile:
    def __init__(self, directory: Path, size: int) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._file = tempfile.TemporaryFile(dir=directory, buffering=0)
            os.ftruncate(self._file.fileno(), size)
            # the mapping keeps its own reference to the file: views of it outlive `close()`
            self._map = mmap.mmap(self._file.fileno(), max(1, size), flags=mmap.MAP_SHARED)
        except OSError as exc:
            raise StateError(f"cannot create a {size}-byte file in {directory}: {exc.strerror or exc}") from None
        self.size = size
        self.view = memoryview(self._map)[:size]

    def write_at(self, offset: int, data: memoryview) -> None:
        """Write through the file, not the mapping: the pages go to the page cache only."""
        try:
            while len(data):
                written = os.pwrite(self._file.fileno(), data, offset)
                data, offset = data[written:], offset + written
        except OSError as exc:
            raise StateError(f"cannot write the state dir's scratch file: {exc.strerror or exc}") from None

    def read_blocks(self, start: int = 0, block_bytes: int = READ_BLOCK_BYTES) -> Iterator[memoryview]:
        """The file's bytes from `start` on, in blocks read through the file (not the mapping) into
        one reused buffer: each block is valid until the next one is produced."""
        buffer = bytearray(block_bytes)
        view = memoryview(buffer)
        for offset in range(start, self.size, block_bytes):
            size = min(block_bytes, self.size - offset)
            got = os.preadv(self._file.fileno(), [view[:size]], offset)
            if got != size:
                raise StateError(f"the state dir's scratch file ends before byte {offset + size}")
            yield view[:size]

    def evict(self, start: int = 0, end: int | None = None) -> None:
        """Unmap the pages that cover bytes [start, end) from the process; their bytes stay in the file."""
        end = self.size if end is None else min(end, self.size)
        first = start // mmap.PAGESIZE * mmap.PAGESIZE
        if end > first:
            self._map.madvise(mmap.MADV_DONTNEED, first, end - first)

    def close(self) -> None:
        """Close the file; the mapping goes once no view of it is left."""
        self._file.close()
