"""Server-side aggregation strategies (DESIGN §5): FedAvg and SCAFFOLD option II.

A strategy sees one round at a time: `begin_round` with the global state, `accumulate`
once per accepted update as it arrives (a running weighted sum, so memory does not grow
with the number of clients), `finish_round` for the new global state.

State names: ``w.<param>`` global weights, ``c.<param>`` server control variate.
Update names: ``delta.<param>`` = y_i - theta, ``dc.<param>`` = c_i+ - c_i.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from fedser_shared.errors import InvalidUpdateError

State = dict[str, np.ndarray]

WEIGHT = "w."
CONTROL = "c."
DELTA = "delta."
DELTA_CONTROL = "dc."


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
    def finish_round(self) -> State: ...


_BLOCK = 1 << 18  # elements: float64 temporaries of 2 MiB stay in reused heap memory


def _add_scaled(total: np.ndarray, value: np.ndarray, scale: float) -> None:
    """total += scale * float64(value), block by block: no full-size float64 temporaries to page in.

    Elementwise the same operations as the one-line form, so the sums are bit-identical.
    """
    flat_total, flat_value = total.reshape(-1), value.reshape(-1)
    for start in range(0, flat_total.size, _BLOCK):
        flat_total[start : start + _BLOCK] += scale * flat_value[start : start + _BLOCK].astype(np.float64)


def validate_update(update: Mapping[str, np.ndarray], expected: Mapping[str, TensorSpec]) -> None:
    """Raise InvalidUpdateError unless names, shapes, dtypes match and every value is finite."""
    missing = sorted(set(expected) - set(update))
    unexpected = sorted(set(update) - set(expected))
    if missing or unexpected:
        raise InvalidUpdateError(f"update tensor names differ: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, spec in expected.items():
        value = update[name]
        if tuple(value.shape) != spec.shape:
            raise InvalidUpdateError(f"tensor '{name}' has shape {tuple(value.shape)}, expected {spec.shape}")
        if value.dtype != spec.dtype:
            raise InvalidUpdateError(f"tensor '{name}' has dtype {value.dtype}, expected {spec.dtype}")
        if not np.isfinite(value).all():
            raise InvalidUpdateError(f"tensor '{name}' contains NaN or infinite values")


class FedAvg:
    """theta <- theta + eta_g * sum_i w_i delta_i with w_i = n_i / sum_j n_j."""

    name = "fedavg"

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = server_lr
        self._state: State = {}
        self._delta_sum: dict[str, np.ndarray] = {}
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
        self._delta_sum = {name: np.zeros(v.shape, np.float64) for name, v in self.expected_update(state).items()}
        self._weight_total = 0.0
        self._n_updates = 0

    @property
    def n_updates(self) -> int:
        return self._n_updates

    def accumulate(self, update: Mapping[str, np.ndarray], n_samples: int) -> None:
        if n_samples <= 0:
            raise InvalidUpdateError(f"n_samples must be positive, got {n_samples}")
        for name, total in self._delta_sum.items():
            if name.startswith(DELTA):
                _add_scaled(total, update[name], n_samples)
        self._weight_total += n_samples
        self._n_updates += 1
        self._accumulate_extra(update)

    def _accumulate_extra(self, update: Mapping[str, np.ndarray]) -> None:
        pass

    def finish_round(self) -> State:
        if self._n_updates == 0:
            return dict(self._state)
        new_state = dict(self._state)
        for name, total in self._delta_sum.items():
            if name.startswith(DELTA):
                weight_name = WEIGHT + name[len(DELTA):]
                step = self.server_lr * total / self._weight_total
                new_state[weight_name] = (self._state[weight_name].astype(np.float64) + step).astype(np.float32)
        return new_state


class Scaffold(FedAvg):
    """SCAFFOLD option II (Karimireddy et al. 2020).

    c_update="paper":      c <- c + (|S|/N) * mean_{i in S} dc_i   (N registered clients)
    c_update="semifedser": c <- c + mean_{i in S} dc_i             (the Semi-FedSER code)
    """

    name = "scaffold"

    def __init__(self, server_lr: float = 1.0, c_update: Literal["paper", "semifedser"] = "paper") -> None:
        super().__init__(server_lr)
        self.c_update = c_update

    def initial_state(self, weights: Mapping[str, np.ndarray]) -> State:
        state = super().initial_state(weights)
        state.update({CONTROL + n[len(WEIGHT):]: np.zeros_like(v) for n, v in list(state.items())})
        return state

    def expected_update(self, state: Mapping[str, np.ndarray]) -> dict[str, TensorSpec]:
        spec = super().expected_update(state)
        spec.update({DELTA_CONTROL + n[len(CONTROL):]: TensorSpec(v.shape, v.dtype) for n, v in state.items() if n.startswith(CONTROL)})
        return spec

    def _accumulate_extra(self, update: Mapping[str, np.ndarray]) -> None:
        for name, total in self._delta_sum.items():
            if name.startswith(DELTA_CONTROL):
                _add_scaled(total, update[name], 1)

    def finish_round(self) -> State:
        new_state = super().finish_round()
        if self._n_updates == 0:
            return new_state
        if self.c_update == "paper":
            scale = 1.0 / max(self._n_registered, self._n_updates)  # (|S|/N) * (1/|S|)
        else:
            scale = 1.0 / self._n_updates
        for name, total in self._delta_sum.items():
            if name.startswith(DELTA_CONTROL):
                control_name = CONTROL + name[len(DELTA_CONTROL):]
                new_state[control_name] = (self._state[control_name].astype(np.float64) + scale * total).astype(np.float32)
        return new_state


def make_strategy(algorithm: str, server_lr: float, c_update: Literal["paper", "semifedser"]) -> FedAvg:
    if algorithm == "fedavg":
        return FedAvg(server_lr)
    if algorithm == "scaffold":
        return Scaffold(server_lr, c_update)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def weights_only(state: Mapping[str, np.ndarray]) -> State:
    return {n: v for n, v in state.items() if n.startswith(WEIGHT)}


def controls_only(state: Mapping[str, np.ndarray]) -> State:
    return {n: v for n, v in state.items() if n.startswith(CONTROL)}
