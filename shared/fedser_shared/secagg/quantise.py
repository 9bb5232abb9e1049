"""An update as one vector of integers mod 2^32, and the sum of such vectors back as an update.

What a client sends, in the order of the update's tensor names sorted:

- its `delta.*` tensors, flattened and clipped together to L2 norm `delta_bound`, times its
  weight w = min(n_samples, max_weight) / max_weight (so FedAvg's weights ride inside);
- its `dc.*` tensors (SCAFFOLD), clipped together to L2 norm `control_bound`, unweighted;
- then two plain integers: min(n_samples, max_weight), and 1 if it trained (0 for an empty
  participation), so that the server learns the total weight and count only as sums.

Each float x of a segment with bound B is stochastically rounded to floor(x·s + u), u ~ U[0, 1),
with s the largest power of two for which n_clients·B·s + n_clients stays below 2^31: the sum of
every client's value can then neither wrap around nor overflow, and its rounding is unbiased.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from fedser_shared.errors import InvalidUpdateError, MaskedInputError, SumOutOfBoundsError
from fedser_shared.tensor_names import DELTA, DELTA_CONTROL

MODULUS_BITS = 32
_LIMIT = 2**31 - 1

# The floats a client is about to quantise (each tensor name -> what it adds to the sum), before
# rounding: a differential-privacy mechanism adds its share of the noise here.
Transform = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class DecodedSum:
    sums: dict[str, np.ndarray]  # delta.*: sum_i n_i * delta_i; dc.*: sum_i dc_i (float64)
    weight_total: int            # sum_i min(n_i, max_weight)
    n_trained: int               # clients that trained (not an empty participation)


@dataclass(frozen=True)
class VectorLayout:
    tensors: tuple[tuple[str, tuple[int, ...]], ...]  # update tensor name -> shape, in name order
    n_clients: int        # the most inputs the sum may hold (the round's roster)
    max_weight: int
    delta_bound: float
    control_bound: float

    @classmethod
    def of(cls, shapes: Mapping[str, tuple[int, ...]], n_clients: int, max_weight: int, delta_bound: float,
           control_bound: float) -> VectorLayout:
        if n_clients < 1 or max_weight < 1 or n_clients * max_weight > _LIMIT:
            raise ValueError(f"{n_clients} clients x weight cap {max_weight} does not fit a 32-bit sum")
        if not (delta_bound > 0 and control_bound > 0):
            raise ValueError("secure aggregation's clip bounds must be positive")
        return cls(tuple(sorted((name, tuple(shape)) for name, shape in shapes.items())), n_clients, max_weight,
                   delta_bound, control_bound)

    @property
    def n_values(self) -> int:
        return sum(math.prod(shape) for _, shape in self.tensors)

    @property
    def length(self) -> int:
        return self.n_values + 2

    def bound_of(self, name: str) -> float:
        return self.control_bound if name.startswith(DELTA_CONTROL) else self.delta_bound

    def scale_of(self, name: str) -> float:
        return float(2.0 ** math.floor(math.log2((_LIMIT - self.n_clients) / (self.n_clients * self.bound_of(name)))))


def _square_sum(values: np.ndarray) -> float:
    return float(np.square(values).sum())  # not np.dot: BLAS threads crawl on a busy machine


def _clip_in_place(values: dict[str, np.ndarray], bound: float) -> None:
    norm = math.sqrt(sum(_square_sum(v) for v in values.values()))
    if not math.isfinite(norm):
        raise InvalidUpdateError("the update contains NaN or infinite values")
    factor = min(1.0, bound / norm) if norm > 0 else 1.0
    for v in values.values():
        v *= factor


def encode(update: Mapping[str, np.ndarray], n_samples: int, layout: VectorLayout, rng: np.random.Generator,
           transform: Transform | None = None) -> np.ndarray:
    """The client's quantised input (uint32, `layout.length` elements).

    One float64 copy of the update is scaled in place, then each tensor is rounded through one
    scratch buffer straight into the output: the same operations in the same order as a
    vectorised floor(clip(x) * s + u), without a temporary per step."""
    names = [name for name, _ in layout.tensors]
    if sorted(update) != names:
        raise InvalidUpdateError(f"update tensors {sorted(update)[:4]}... are not the layout's {names[:4]}...")
    for name, shape in layout.tensors:
        if tuple(update[name].shape) != shape:
            raise InvalidUpdateError(f"tensor '{name}' has shape {update[name].shape}, expected {shape}")
    weight = min(max(n_samples, 0), layout.max_weight)
    values = {name: np.array(update[name], dtype=np.float64).reshape(-1) if weight else
              np.zeros(math.prod(update[name].shape)) for name in names}  # copies: scaled in place below
    deltas = {n: v for n, v in values.items() if n.startswith(DELTA)}
    controls = {n: v for n, v in values.items() if n.startswith(DELTA_CONTROL)}
    _clip_in_place(deltas, layout.delta_bound)
    _clip_in_place(controls, layout.control_bound)
    for v in deltas.values():
        v *= weight / layout.max_weight
    summed = deltas | controls  # in this order: a transform drawing noise per tensor draws it as before
    if transform is not None:
        summed = transform(summed)
    out = np.empty(layout.length, dtype=np.uint32)
    signed = out.view(np.int32)  # two's complement: an int32 written here is its value mod 2^32
    scratch = np.empty(max(math.prod(shape) for _, shape in layout.tensors))
    noise = np.empty_like(scratch)
    start = 0
    for name in names:
        size = summed[name].size
        flat, uniform = scratch[:size], noise[:size]
        np.clip(summed[name].reshape(-1), -layout.bound_of(name), layout.bound_of(name), out=flat)
        flat *= layout.scale_of(name)
        flat += rng.random(out=uniform)
        np.floor(flat, out=flat)
        # |flat| <= bound * scale + 1 < 2^31 (VectorLayout.scale_of): the cast is exact
        np.copyto(signed[start : start + size], flat, casting="unsafe")
        start += size
    out[start] = weight
    out[start + 1] = 1 if weight else 0
    return out


def decode(total: np.ndarray, layout: VectorLayout, n_inputs: int, check_norm: bool = True) -> DecodedSum:
    """The sum of `n_inputs` clients' inputs, checked against what their bounds allow."""
    if total.dtype != np.uint32 or total.shape != (layout.length,):
        raise MaskedInputError(f"a sum must be {layout.length} uint32 values, got {total.shape} {total.dtype}")
    signed = total.view(np.int32)
    sums: dict[str, np.ndarray] = {}
    start = 0
    for name, shape in layout.tensors:
        size = math.prod(shape)
        scale, bound = layout.scale_of(name), layout.bound_of(name)
        block = signed[start : start + size].astype(np.float64)
        if np.abs(block).max(initial=0.0) > n_inputs * (bound * scale + 1):
            raise SumOutOfBoundsError(f"the unmasked sum of '{name}' is beyond {n_inputs} x its bound {bound}")
        value = block / scale
        if name.startswith(DELTA):
            value *= layout.max_weight
        sums[name] = value.reshape(shape)
        start += size
    weight_total, n_trained = int(total[start]), int(total[start + 1])
    if weight_total > n_inputs * layout.max_weight or n_trained > n_inputs or (weight_total == 0) != (n_trained == 0):
        raise SumOutOfBoundsError(f"the unmasked weights ({weight_total} samples, {n_trained} clients) do not fit "
                                  f"{n_inputs} inputs")
    if check_norm:  # each client's part is within its bound, so the sum's norm is within the bounds' sum
        for prefix, bound, factor in ((DELTA, layout.delta_bound * weight_total, layout.max_weight),
                                      (DELTA_CONTROL, layout.control_bound * n_trained, 1)):
            parts = [(n, v.reshape(-1)) for n, v in sums.items() if n.startswith(prefix)]
            norm = math.sqrt(sum(_square_sum(v) for _, v in parts))
            rounding = n_inputs * math.sqrt(sum((factor / layout.scale_of(n)) ** 2 * v.size for n, v in parts))
            if norm > bound * (1 + 1e-9) + rounding:
                raise SumOutOfBoundsError(f"the unmasked sum of {prefix}* has L2 norm {norm:.4g}, above the "
                                          f"clients' bounds ({bound:.4g})")
    return DecodedSum(sums, weight_total, n_trained)
