"""Server-side aggregation strategies (DESIGN §5): FedAvg and SCAFFOLD option II, as maths over arrays.

A round's new state is linear in its updates: every update tensor is added, weighted, into a
float64 running sum (`sum_weight`), and each state tensor then takes one step computed from its
sum and the round's totals (`steps`). A strategy says only that; where the sums live and how
updates reach them (in memory, in files, block by block as they stream in) is the engine's job
(`engine.sums`). `aggregate` is the whole rule on in-memory arrays, for reading and for tests.

State names: ``w.<param>`` global weights, ``c.<param>`` server control variate.
Update names: ``delta.<param>`` = y_i - theta, ``dc.<param>`` = c_i+ - c_i.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from fedser_shared.errors import InvalidUpdateError
from fedser_shared.tensor_names import CONTROL, DELTA, DELTA_CONTROL, WEIGHT

State = dict[str, np.ndarray]
StepFn = Callable[[np.ndarray], np.ndarray]
__all__ = ["CONTROL", "DELTA", "DELTA_CONTROL", "WEIGHT", "FedAvg", "RoundTotals", "Scaffold", "State", "Step",
           "Strategy", "TensorSpec", "add_scaled", "aggregate", "make_strategy", "stepped"]


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class RoundTotals:
    """What a round's new state depends on besides its sums."""

    n_updates: int        # updates folded in (empty participations are not)
    weight_total: float   # their n_samples, summed
    n_registered: int     # trainable clients registered when the round began


@dataclass(frozen=True)
class Step:
    """A state tensor's move: new = old + step(its update sum `sum_name`)."""

    sum_name: str
    step: StepFn


class Strategy(Protocol):
    name: str

    def initial_state(self, weights: Mapping[str, np.ndarray]) -> State: ...
    def expected_update(self, state: Mapping[str, np.ndarray]) -> dict[str, TensorSpec]: ...
    def update_weight(self, n_samples: int) -> float: ...
    def sum_weight(self, update_tensor: str, n_samples: int, delta_scale: float = 1.0) -> float: ...
    def perturb(self, sums: Mapping[str, np.ndarray], totals: RoundTotals) -> None: ...
    def steps(self, state_names: Iterable[str], totals: RoundTotals) -> dict[str, Step]: ...


BLOCK = 1 << 18  # elements: float64 temporaries of 2 MiB stay in reused heap memory


def add_scaled(total: np.ndarray, value: np.ndarray, scale: float) -> None:
    """total += scale * float64(value), block by block: no full-size float64 temporaries to page in.

    Elementwise the same operations as the one-line form, so the sums are bit-identical: the float64 loop
    casts each element exactly, and a scale of 1 (SCAFFOLD's dc sums) multiplies by nothing, as 1 * x == x.
    """
    flat_total, flat_value = total.reshape(-1), value.reshape(-1)
    scaled = None if scale == 1 else np.empty(min(BLOCK, flat_total.size), np.float64)
    for start in range(0, flat_total.size, BLOCK):
        block, values = flat_total[start : start + BLOCK], flat_value[start : start + BLOCK]
        if scaled is None:
            np.add(block, values, out=block, dtype=np.float64)
        else:
            np.add(block, np.multiply(values, scale, out=scaled[: values.size], dtype=np.float64), out=block)


def stepped(old: np.ndarray, step: Step, total: np.ndarray) -> np.ndarray:
    """A block of a state tensor after its step (float32), from the same block of its sum (float64)."""
    return (old.astype(np.float64) + step.step(total)).astype(np.float32)


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

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = server_lr

    def initial_state(self, weights: Mapping[str, np.ndarray]) -> State:
        return {name: np.array(value, dtype=np.float32) for name, value in weights.items() if name.startswith(WEIGHT)}

    def expected_update(self, state: Mapping[str, np.ndarray]) -> dict[str, TensorSpec]:
        return {DELTA + n[len(WEIGHT):]: TensorSpec(v.shape, v.dtype) for n, v in state.items() if n.startswith(WEIGHT)}

    def update_weight(self, n_samples: int) -> float:
        """An update's weight in the round's total: the samples it trained on."""
        if n_samples <= 0:
            raise InvalidUpdateError(f"n_samples must be positive, got {n_samples}")
        return n_samples

    def sum_weight(self, update_tensor: str, n_samples: int, delta_scale: float = 1.0) -> float:
        """An update tensor's weight in its running sum: delta.* by the update's weight, shrunk by
        `delta_scale` (norm clipping) without changing the update's weight in the total."""
        weight = self._weight_of(update_tensor, self.update_weight(n_samples))
        return weight * delta_scale if delta_scale != 1.0 and update_tensor.startswith(DELTA) else weight

    def _weight_of(self, update_tensor: str, weight: float) -> float:
        return weight  # every sum is a delta.* sum, weighted by the update's weight

    def perturb(self, sums: Mapping[str, np.ndarray], totals: RoundTotals) -> None:
        """The round's float64 sums (flat, by update tensor), just before the steps are taken: FedAvg
        leaves them as they are (DP-FedAvg adds its noise here)."""

    def steps(self, state_names: Iterable[str], totals: RoundTotals) -> dict[str, Step]:
        """state tensor -> its step (the others stay); a round without updates moves nothing."""
        if not totals.n_updates:
            return {}
        server_lr, weight_total = self.server_lr, totals.weight_total
        return {name: Step(DELTA + name[len(WEIGHT):], lambda total: server_lr * total / weight_total)
                for name in state_names if name.startswith(WEIGHT)}


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

    def _weight_of(self, update_tensor: str, weight: float) -> float:
        return 1 if update_tensor.startswith(DELTA_CONTROL) else weight  # dc_i: an unweighted mean

    def steps(self, state_names: Iterable[str], totals: RoundTotals) -> dict[str, Step]:
        if not totals.n_updates:
            return {}
        names = list(state_names)
        if self.c_update == "paper":
            scale = 1.0 / max(totals.n_registered, totals.n_updates)  # (|S|/N) * (1/|S|)
        else:
            scale = 1.0 / totals.n_updates
        steps = super().steps(names, totals)
        steps.update({name: Step(DELTA_CONTROL + name[len(CONTROL):], lambda total: scale * total)
                      for name in names if name.startswith(CONTROL)})
        return steps


def make_strategy(algorithm: str, server_lr: float, c_update: Literal["paper", "semifedser"]) -> Strategy:
    if algorithm == "fedavg":
        return FedAvg(server_lr)
    if algorithm == "scaffold":
        return Scaffold(server_lr, c_update)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def aggregate(strategy: Strategy, state: Mapping[str, np.ndarray], updates: Iterable[tuple[Mapping[str, np.ndarray], int]],
              n_registered: int) -> State:
    """The round's new state from whole updates (update, n_samples) held in memory: the rule the
    engine's running sums (`engine.sums.WeightedSums`) apply block by block, bit for bit."""
    expected = strategy.expected_update(state)
    sums = {name: np.zeros(spec.shape, np.float64) for name, spec in expected.items()}
    n_updates, weight_total = 0, 0.0
    for update, n_samples in updates:
        for name in sums:
            add_scaled(sums[name], update[name], strategy.sum_weight(name, n_samples))
        n_updates, weight_total = n_updates + 1, weight_total + strategy.update_weight(n_samples)
    totals = RoundTotals(n_updates, weight_total, n_registered)
    strategy.perturb({name: total.reshape(-1) for name, total in sums.items()}, totals)
    steps = strategy.steps(state, totals)
    return {name: stepped(old, steps[name], sums[steps[name].sum_name]) if name in steps else np.array(old)
            for name, old in state.items()}

