"""Server-side aggregation strategies (DESIGN §5): FedAvg and SCAFFOLD option II.

A strategy sees one round at a time: `begin_round` with the global state, `accumulate`
once per accepted update as it arrives (a running weighted sum, so memory does not grow
with the number of clients), `finish_round` for the new global state. An update may also
come as runs of its elements (`accumulate_runs`, e.g. read block by block from disk), and
the new state may be written into arrays the caller provides (e.g. views into the next blob)
or taken as runs (`new_state_runs`, e.g. written to a file). The caller also decides where the
float64 running sums live (`new_sum`): anonymous memory by default.

State names: ``w.<param>`` global weights, ``c.<param>`` server control variate.
Update names: ``delta.<param>`` = y_i - theta, ``dc.<param>`` = c_i+ - c_i.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from fedser_shared.errors import InvalidUpdateError
from fedser_shared.tensor_names import CONTROL, DELTA, DELTA_CONTROL, WEIGHT

State = dict[str, np.ndarray]
__all__ = ["CONTROL", "DELTA", "DELTA_CONTROL", "WEIGHT", "FedAvg", "InMemorySum", "RunningSum", "Scaffold", "State", "Strategy",
           "TensorSpec"]


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: np.dtype


def _rename(state: Mapping[str, np.ndarray], old: str, new: str) -> dict[str, np.ndarray]:
    return {new + name[len(old):]: value for name, value in state.items() if name.startswith(old)}


class Strategy(Protocol):
    name: str

    def initial_state(self, weights: Mapping[str, np.ndarray]) -> State: ...
    def expected_update(self, state: Mapping[str, np.ndarray]) -> dict[str, TensorSpec]: ...
    def begin_round(self, state: Mapping[str, np.ndarray], n_registered: int) -> None: ...
    def accumulate(self, update: Mapping[str, np.ndarray], n_samples: int) -> None: ...
    def accumulate_runs(self, runs: Iterable[tuple[str, int, np.ndarray]], n_samples: int, delta_scale: float = 1.0) -> None: ...
    def accumulate_sum(self, sums: Mapping[str, np.ndarray], weight_total: int, n_updates: int) -> None: ...
    def new_state_runs(self) -> Iterator[tuple[str, int, np.ndarray]]: ...
    def finish_round(self, into: Mapping[str, np.ndarray] | None = None) -> State: ...


_BLOCK = 1 << 18  # elements: float64 temporaries of 2 MiB stay in reused heap memory


def _add_scaled(total: np.ndarray, value: np.ndarray, scale: float) -> None:
    """total += scale * float64(value), block by block: no full-size float64 temporaries to page in.

    Elementwise the same operations as the one-line form, so the sums are bit-identical.
    """
    flat_total, flat_value = total.reshape(-1), value.reshape(-1)
    for start in range(0, flat_total.size, _BLOCK):
        flat_total[start : start + _BLOCK] += scale * flat_value[start : start + _BLOCK].astype(np.float64)


class RunningSum(Protocol):
    """A float64 running sum, flat: where its pages live is the caller's choice (`FedAvg(new_sum=...)`)."""

    flat: np.ndarray

    def settle(self, start: int, stop: int) -> None:
        """Elements [start, stop) were just written and are not needed again soon."""

    def release_before(self, element: int) -> None:
        """The elements below `element` are consumed and must not be read again."""


class InMemorySum:
    """A float64 sum in an anonymous private mapping of its own, so that `finish_round` can give
    its pages back to the OS as it consumes them: the sums (2x the model) and the new state (1x)
    are then never resident together."""

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


def check_layout(found: Mapping[str, TensorSpec], expected: Mapping[str, TensorSpec]) -> None:
    """Raise InvalidUpdateError unless an update's tensor names, shapes and dtypes are the expected ones."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise InvalidUpdateError(f"update tensor names differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, spec in expected.items():
        if found[name].shape != spec.shape:
            raise InvalidUpdateError(f"tensor '{name}' has shape {found[name].shape}, expected {spec.shape}")
        if found[name].dtype != spec.dtype:
            raise InvalidUpdateError(f"tensor '{name}' has dtype {found[name].dtype}, expected {spec.dtype}")


def check_finite(name: str, values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise InvalidUpdateError(f"tensor '{name}' contains NaN or infinite values")


class FedAvg:
    """theta <- theta + eta_g * sum_i w_i delta_i with w_i = n_i / sum_j n_j."""

    name = "fedavg"

    def __init__(self, server_lr: float = 1.0, new_sum: Callable[[int], RunningSum] = InMemorySum) -> None:
        self.server_lr = server_lr
        self.new_sum = new_sum  # where each running sum lives: a float64 sum of this many elements
        self._state: State = {}
        self._sums: dict[str, RunningSum] = {}
        self._weight_total = 0.0
        self._n_updates = 0

    def initial_state(self, weights: Mapping[str, np.ndarray]) -> State:
        return {name: np.array(value, dtype=np.float32) for name, value in weights.items() if name.startswith(WEIGHT)}

    def expected_update(self, state: Mapping[str, np.ndarray]) -> dict[str, TensorSpec]:
        return {DELTA + n[len(WEIGHT):]: TensorSpec(v.shape, v.dtype) for n, v in state.items() if n.startswith(WEIGHT)}

    def begin_round(self, state: Mapping[str, np.ndarray], n_registered: int) -> None:
        self._state = dict(state)
        self._n_registered = n_registered
        # float64 running sums keep the result independent of arrival order in practice
        self._sums = {name: self.new_sum(math.prod(spec.shape)) for name, spec in self.expected_update(state).items()}
        self._weight_total = 0.0
        self._n_updates = 0

    @property
    def n_updates(self) -> int:
        return self._n_updates

    def accumulate(self, update: Mapping[str, np.ndarray], n_samples: int) -> None:
        self.accumulate_runs(((name, 0, update[name].reshape(-1)) for name in self._sums), n_samples)

    def accumulate_runs(self, runs: Iterable[tuple[str, int, np.ndarray]], n_samples: int, delta_scale: float = 1.0) -> None:
        """Fold one update given as runs (tensor name, first flat element, flat values) that
        together cover each of its elements exactly once: the caller has checked the update.
        `delta_scale` shrinks its delta.* tensors (norm clipping) without changing its weight."""
        if n_samples <= 0:
            raise InvalidUpdateError(f"n_samples must be positive, got {n_samples}")
        for name, start, values in runs:
            weight = self._weight_of(name, n_samples)
            if delta_scale != 1.0 and name.startswith(DELTA):
                weight = weight * delta_scale
            running = self._sums[name]
            _add_scaled(running.flat[start : start + values.size], values, weight)
            running.settle(start, start + values.size)
        self._weight_total += n_samples
        self._n_updates += 1

    def accumulate_sum(self, sums: Mapping[str, np.ndarray], weight_total: int, n_updates: int) -> None:
        """Fold `n_updates` updates at once, given only as their weighted sums (secure aggregation):
        sums[name] = sum_i weight_of(name, n_i) * update_i[name], weight_total = sum_i n_i."""
        if n_updates <= 0 or weight_total <= 0:
            raise InvalidUpdateError(f"a sum of {n_updates} updates with total weight {weight_total} cannot be folded")
        for name, running in self._sums.items():
            _add_scaled(running.flat, sums[name], 1.0)
        self._weight_total += weight_total
        self._n_updates += n_updates

    def _weight_of(self, name: str, n_samples: int) -> int:
        return n_samples  # every sum is a delta.* sum, weighted by the samples trained on

    def _steps(self) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
        """state tensor -> (its sum, the step a block of that sum makes it take)"""
        return {WEIGHT + name[len(DELTA):]: (name, lambda total: self.server_lr * total / self._weight_total)
                for name in self._sums if name.startswith(DELTA)}

    def new_state_runs(self) -> Iterator[tuple[str, int, np.ndarray]]:
        """The new global state as runs (tensor name, first flat element, flat values), each valid
        until the next is produced. The sums are consumed: their memory goes back as they are read."""
        steps = self._steps() if self._n_updates else {}
        for name, old in self._state.items():
            old_flat = old.reshape(-1)
            if name not in steps:
                for start in range(0, old_flat.size, _BLOCK):
                    yield name, start, old_flat[start : start + _BLOCK]
                continue
            sum_name, step = steps[name]
            running = self._sums[sum_name]
            for start in range(0, old_flat.size, _BLOCK):
                block = slice(start, start + _BLOCK)
                yield name, start, (old_flat[block].astype(np.float64) + step(running.flat[block])).astype(np.float32)
                running.release_before(start + _BLOCK)
        self._sums = {}

    def finish_round(self, into: Mapping[str, np.ndarray] | None = None) -> State:
        """The new global state, block by block, in `into` (arrays shaped like the state) when given."""
        new_state = dict(into) if into is not None else {name: np.empty_like(v) for name, v in self._state.items()}
        for name, start, values in self.new_state_runs():
            new_state[name].reshape(-1)[start : start + values.size] = values
        return new_state


class Scaffold(FedAvg):
    """SCAFFOLD option II (Karimireddy et al. 2020).

    c_update="paper":      c <- c + (|S|/N) * mean_{i in S} dc_i   (N registered clients)
    c_update="semifedser": c <- c + mean_{i in S} dc_i             (the Semi-FedSER code)
    """

    name = "scaffold"

    def __init__(self, server_lr: float = 1.0, c_update: Literal["paper", "semifedser"] = "paper",
                 new_sum: Callable[[int], RunningSum] = InMemorySum) -> None:
        super().__init__(server_lr, new_sum)
        self.c_update = c_update

    def initial_state(self, weights: Mapping[str, np.ndarray]) -> State:
        state = super().initial_state(weights)
        state.update({CONTROL + n[len(WEIGHT):]: np.zeros_like(v) for n, v in list(state.items())})
        return state

    def expected_update(self, state: Mapping[str, np.ndarray]) -> dict[str, TensorSpec]:
        spec = super().expected_update(state)
        spec.update({DELTA_CONTROL + n[len(CONTROL):]: TensorSpec(v.shape, v.dtype) for n, v in state.items() if n.startswith(CONTROL)})
        return spec

    def _weight_of(self, name: str, n_samples: int) -> int:
        return 1 if name.startswith(DELTA_CONTROL) else n_samples  # dc_i: an unweighted mean

    def _steps(self) -> dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]:
        if self.c_update == "paper":
            scale = 1.0 / max(self._n_registered, self._n_updates)  # (|S|/N) * (1/|S|)
        else:
            scale = 1.0 / self._n_updates
        steps = super()._steps()
        steps.update({CONTROL + name[len(DELTA_CONTROL):]: (name, lambda total: scale * total)
                      for name in self._sums if name.startswith(DELTA_CONTROL)})
        return steps


def make_strategy(algorithm: str, server_lr: float, c_update: Literal["paper", "semifedser"],
                  new_sum: Callable[[int], RunningSum] = InMemorySum) -> FedAvg:
    if algorithm == "fedavg":
        return FedAvg(server_lr, new_sum)
    if algorithm == "scaffold":
        return Scaffold(server_lr, c_update, new_sum)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def weights_only(state: Mapping[str, np.ndarray]) -> State:
    return {n: v for n, v in state.items() if n.startswith(WEIGHT)}


def controls_only(state: Mapping[str, np.ndarray]) -> State:
    return {n: v for n, v in state.items() if n.startswith(CONTROL)}
