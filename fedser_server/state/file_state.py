"""A large model's served blob kept in a `MappedFile` of the state dir instead of resident memory
(`federation.state_in_memory_max_bytes`; its running sums: `engine.sums.FileSum`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fedser_server.state.mapped_file import MappedFile
from fedser_shared import codec
from fedser_shared.checksum import Checksum


class BlobFile:
    """A blob of `layout` in a mapped file: FetchModel serves the mapping (`data`), `tensors` are
    views into it; it is filled run by run through the file and checksummed from the file, so
    that neither step maps its pages in."""

    def __init__(self, directory: Path, layout: codec.BlobLayout) -> None:
        self._file = MappedFile(directory, layout.total_len)
        self._file.write_at(0, memoryview(layout.prefix))
        self.data = self._file.view
        self._data_start = len(layout.prefix)
        self.tensors = codec.decode(self.data)
        self._offsets = {entry.name: (entry.begin, entry.dtype.itemsize)
                         for entry in codec.read_layout(self.data[: len(layout.prefix)], layout.total_len)}

    def write_run(self, name: str, start: int, values: np.ndarray) -> None:
        """Elements [start, start + values.size) of tensor `name`."""
        begin, itemsize = self._offsets[name]
        self._file.write_at(begin + start * itemsize, np.ascontiguousarray(values).data.cast("B"))

    def evict_run(self, name: str, start: int, count: int) -> None:
        begin, itemsize = self._offsets[name]
        self._file.evict(begin + start * itemsize, begin + (start + count) * itemsize)

    def evict(self) -> None:
        """Unmap every page this process touched (serving, checkpointing); the bytes stay in the file."""
        self._file.evict()

    def data_blocks(self) -> Iterator[memoryview]:
        """The tensors' bytes (the blob past its prefix), read through the file in reused blocks."""
        return self._file.read_blocks(self._data_start)

    def blob(self) -> codec.Blob:
        """The blob to serve, its checksum taken through the file. (The SHA-256 that older clients
        need is computed through the mapping on first use; FetchModel maps the pages in anyway.)"""
        hasher = Checksum.XXH3_128.new()
        for block in self._file.read_blocks():
            hasher.update(block)
        return codec.Blob(data=self.data, xxh3_128=hasher.digest())

    def close(self) -> None:
        """Close the file: the mapping stays while a stream still reads it."""
        self._file.close()
