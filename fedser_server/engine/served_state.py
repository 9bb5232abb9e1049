"""Where the global state that FetchModel serves lives, and how a round's new one is made.

Small models (`federation.state_in_memory_max_bytes`): a blob in memory, the running sums in
anonymous memory, the fastest. Larger ones: the blob and the sums in unnamed files of the state
dir (`state.file_state`), of which the server maps in only the few MiB it works on, so that its
resident memory holds no model-sized array however many clients report: the new state is
written run by run into the next blob's file while the old one is read, and the checkpoint is
copied from that file.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from fedser_server.core.strategy import State
from fedser_server.engine.sums import InMemorySum, NewSum, WeightedSums, sums_in
from fedser_server.state.file_state import BlobFile
from fedser_server.state.store import StateStore
from fedser_shared import codec

SaveCheckpoint = Callable[[StateStore, int, dict[str, object]], None]


class ServedState(Protocol):
    def serve(self, tensors: State) -> tuple[State, codec.Blob]:
        """Hold `tensors` as the served blob: (views into it, the blob)."""

    def sums(self) -> NewSum:
        """Where a round's running sums live next to this state."""

    def next_round(self, sums: WeightedSums) -> tuple[State, codec.Blob]:
        """The new state made from `sums` as the next blob; the previous one stays valid for streams still reading it."""

    def checkpoint_of(self, state: State) -> SaveCheckpoint:
        """What writes `state` (the one `serve` or `next_round` returned last) as a checkpoint, later, on the writer's thread."""

    def read_done(self, name: str, start: int, count: int) -> None:
        """Elements [start, start + count) of tensor `name` of the state served last were read and
        are not needed again soon."""


def give_back_free_heap() -> None:
    """Hand the heap that start-up's model-sized temporaries left free back to the OS: glibc keeps
    up to MALLOC_TRIM_THRESHOLD_ of it (512 MiB in fedser's processes, DESIGN §8). Not glibc: nothing."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class InMemoryState:
    def __init__(self, layout: codec.BlobLayout) -> None:
        self._layout = layout

    def serve(self, tensors: State) -> tuple[State, codec.Blob]:
        buffer, views = self._layout.write(tensors)
        return views, codec.Blob.of(buffer)

    def sums(self) -> NewSum:
        return InMemorySum

    def next_round(self, sums: WeightedSums) -> tuple[State, codec.Blob]:
        buffer, into = self._layout.allocate()
        return sums.new_state(into), codec.Blob.of(buffer)

    def checkpoint_of(self, state: State) -> SaveCheckpoint:
        return lambda store, round_index, train_record: store.save_global(state, round_index, train_record)

    def read_done(self, name: str, start: int, count: int) -> None:
        pass  # resident anyway


class FileBackedState:
    def __init__(self, layout: codec.BlobLayout, directory: Path) -> None:
        self._layout, self._dir = layout, directory
        self._current: BlobFile | None = None

    def sums(self) -> NewSum:
        """Running sums in files next to the blobs."""
        return sums_in(self._dir)

    def serve(self, tensors: State) -> tuple[State, codec.Blob]:
        blob = BlobFile(self._dir, self._layout)
        for name, values in tensors.items():
            blob.write_run(name, 0, np.asarray(values).reshape(-1))
        self._current = blob
        return blob.tensors, blob.blob()

    def next_round(self, sums: WeightedSums) -> tuple[State, codec.Blob]:
        old, new = self._current, BlobFile(self._dir, self._layout)
        for name, start, values in sums.new_state_runs():
            new.write_run(name, start, values)
            if old is not None:
                old.evict_run(name, start, values.size)  # the new state read them through the mapping
        self._current = new
        return new.tensors, new.blob()

    def checkpoint_of(self, state: State) -> SaveCheckpoint:
        blob = self._current
        assert blob is not None and blob.tensors is state, "a checkpoint is of the state served last"

        def save(store: StateStore, round_index: int, train_record: dict[str, object]) -> None:
            store.save_global_from(blob, round_index, train_record)
            blob.evict()  # what FetchModel streams mapped in meanwhile; the bytes stay in the file

        return save

    def read_done(self, name: str, start: int, count: int) -> None:
        """Hand the pages back: e.g. the global weights' norm, taken once per round, would otherwise
        keep the whole model mapped in until the round's checkpoint (1,000 x 64 MB: 64 MB of the
        server's peak)."""
        if self._current is not None:
            self._current.evict_run(name, start, count)
