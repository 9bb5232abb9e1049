"""A round's running sums (DESIGN §3.4): where they live and how updates reach them.

`WeightedSums` folds each accepted update, as runs of its elements read block by block, into one
float64 sum per update tensor with the weights the `Strategy` gives, and makes the new state from
them with the strategy's steps: memory does not grow with the number of clients. Where a sum's
pages live is `new_sum`'s choice: anonymous memory given back to the OS as it is consumed
(`InMemorySum`), or an unnamed file of the state dir for a large model (`FileSum`).
"""

from __future__ import annotations

import functools
import math
import mmap
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from fedser_server.core.strategy import BLOCK, RoundTotals, State, Strategy, add_scaled, stepped
from fedser_server.state.mapped_file import MappedFile
from fedser_shared.errors import InvalidUpdateError

Run = tuple[str, int, np.ndarray]  # (tensor name, first flat element, flat values)


class RunningSum(Protocol):
    """A float64 running sum, flat."""

    flat: np.ndarray

    def settle(self, start: int, stop: int) -> None:
        """Elements [start, stop) were just written and are not needed again soon."""

    def release_before(self, element: int) -> None:
        """The elements below `element` are consumed and must not be read again."""


NewSum = Callable[[int], RunningSum]  # a zeroed sum of this many elements


class InMemorySum:
    """A sum in an anonymous private mapping of its own, so that the new state can give its pages
    back to the OS as it consumes them: the sums (2x the model) and the new state (1x) are then
    never resident together."""

    def __init__(self, count: int) -> None:
        self._map = mmap.mmap(-1, max(1, count * 8), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.flat = np.frombuffer(self._map, np.float64, count)
        self._released = 0

    def settle(self, start: int, stop: int) -> None:
        pass  # anonymous pages must stay: they hold the sum

    def release_before(self, element: int) -> None:
        end = element * 8 // mmap.PAGESIZE * mmap.PAGESIZE
        if end > self._released:
            self._map.madvise(mmap.MADV_DONTNEED, self._released, end - self._released)
            self._released = end


class FileSum:
    """A sum in a mapped unnamed file: the pages of a run of elements are evicted as soon as it is
    added to or consumed, so the server's resident memory holds no model-sized sum."""

    def __init__(self, directory: Path, count: int) -> None:
        self._file = MappedFile(directory, count * 8)
        self.flat = np.frombuffer(self._file.view, np.float64, count)
        self._file.close()  # the mapping is all it needs
        self._released = 0

    def settle(self, start: int, stop: int) -> None:
        self._file.evict(start * 8, stop * 8)

    def release_before(self, element: int) -> None:
        self._file.evict(self._released, element * 8)
        self._released = max(self._released, element * 8)


class _RecycledSum:
    """A sum in an array that goes back to its pool once every element has been consumed."""

    def __init__(self, flat: np.ndarray, give_back: Callable[[np.ndarray], None]) -> None:
        self.flat = flat
        self._give_back: Callable[[np.ndarray], None] | None = give_back  # None once given back

    def settle(self, start: int, stop: int) -> None:
        pass

    def release_before(self, element: int) -> None:
        if element >= self.flat.size and self._give_back is not None:
            self._give_back(self.flat)
            self._give_back = None


class RecycledSums:
    """Sums kept in the same float64 arrays round after round, zeroed when handed out again: for a process
    that runs many small rounds in memory (the in-process engine), where a fresh mapping per round page-faults
    every 4 KiB of its sums. A sum not consumed to its end is left to the garbage collector."""

    def __init__(self) -> None:
        self._free: dict[int, list[np.ndarray]] = {}

    def __call__(self, count: int) -> RunningSum:
        free = self._free.setdefault(count, [])
        flat = free.pop() if free else np.empty(count, np.float64)
        flat.fill(0.0)
        return _RecycledSum(flat, free.append)


def sums_in(directory: Path) -> NewSum:
    """Sums in files of `directory` (`FileSum`)."""
    return functools.partial(FileSum, directory)


class WeightedSums:
    """The running sums of one round, started from the global state it builds on."""

    def __init__(self, strategy: Strategy, state: Mapping[str, np.ndarray], n_registered: int,
                 new_sum: NewSum = InMemorySum) -> None:
        self._strategy, self._state, self._n_registered = strategy, dict(state), n_registered
        self._sums = {name: new_sum(math.prod(spec.shape)) for name, spec in strategy.expected_update(state).items()}
        self._weight_total = 0.0
        self.n_updates = 0

    def add(self, update: Mapping[str, np.ndarray], n_samples: int, delta_scale: float = 1.0) -> None:
        """Fold in one whole update held in memory."""
        self.add_runs(((name, 0, update[name].reshape(-1)) for name in self._sums), n_samples, delta_scale)

    def add_runs(self, runs: Iterable[Run], n_samples: int, delta_scale: float = 1.0) -> None:
        """Fold in one update given as runs that together cover each of its elements exactly once
        (the update was checked before it got here). `delta_scale` is its norm clipping."""
        for name, start, values in runs:
            running = self._sums[name]
            add_scaled(running.flat[start : start + values.size], values, self._strategy.sum_weight(name, n_samples, delta_scale))
            running.settle(start, start + values.size)
        self._weight_total += self._strategy.update_weight(n_samples)
        self.n_updates += 1

    def add_sum(self, sums: Mapping[str, np.ndarray], weight_total: float, n_updates: int) -> None:
        """Fold `n_updates` updates at once, given only as their weighted sums (secure aggregation):
        sums[name] = sum_i sum_weight(name, n_i) * update_i[name], weight_total = sum_i n_i."""
        if n_updates <= 0 or weight_total <= 0:
            raise InvalidUpdateError(f"a sum of {n_updates} updates with total weight {weight_total} cannot be folded")
        for name, running in self._sums.items():
            add_scaled(running.flat, sums[name], 1.0)
        self._weight_total += weight_total
        self.n_updates += n_updates

    def new_state_runs(self) -> Iterator[Run]:
        """The new global state as runs, each valid until the next is produced. The sums are
        consumed: their memory goes back as they are read; call it once."""
        totals = RoundTotals(self.n_updates, self._weight_total, self._n_registered)
        self._strategy.perturb({name: running.flat for name, running in self._sums.items()}, totals)
        steps = self._strategy.steps(self._state, totals)
        for name, old in self._state.items():
            old_flat = old.reshape(-1)
            step = steps.get(name)
            for start in range(0, old_flat.size, BLOCK):
                block = slice(start, start + BLOCK)
                if step is None:
                    yield name, start, old_flat[block]
                    continue
                running = self._sums[step.sum_name]
                yield name, start, stepped(old_flat[block], step, running.flat[block])
                running.release_before(start + BLOCK)
        self._sums = {}

    def new_state(self, into: Mapping[str, np.ndarray] | None = None) -> State:
        """The new global state, written block by block into `into` (arrays shaped like the state) when given."""
        new = dict(into) if into is not None else {name: np.empty_like(v) for name, v in self._state.items()}
        for name, start, values in self.new_state_runs():
            new[name].reshape(-1)[start : start + values.size] = values
        return new
