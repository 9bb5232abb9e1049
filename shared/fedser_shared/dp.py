"""The client's part of DP-FedAvg: clip an update's model change to an L2 bound, add Gaussian noise.

Used by a client in `distributed` mode (noise before the update leaves the device, so that only the
sum of n such updates carries the full noise) and by the server in `central` mode (clipping each
received update before it is summed). Randomness comes in as a numpy Generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from fedser_shared.tensor_names import DELTA


def update_norm(update: Mapping[str, np.ndarray]) -> float:
    """L2 norm of the model change (the delta.* tensors together), in float64."""
    return math.sqrt(sum(float(np.dot(v.reshape(-1).astype(np.float64), v.reshape(-1).astype(np.float64)))
                         for name, v in update.items() if name.startswith(DELTA)))


def clip_scale(norm: float, clip_norm: float) -> float:
    """The factor that brings a model change of L2 norm `norm` to at most `clip_norm`."""
    return min(1.0, clip_norm / norm) if norm > 0 else 1.0


def clip_update(update: Mapping[str, np.ndarray], clip_norm: float) -> tuple[dict[str, np.ndarray], float]:
    """The update with its delta.* tensors scaled to L2 norm at most `clip_norm`, and the norm before clipping."""
    norm = update_norm(update)
    scale = clip_scale(norm, clip_norm)
    clipped = {name: (v * np.float32(scale)).astype(v.dtype) if name.startswith(DELTA) and scale < 1.0 else v
               for name, v in update.items()}
    return clipped, norm


def client_noise_std(noise_multiplier: float, clip_norm: float, n_clients: int) -> float:
    """Per-client std that makes the sum over `n_clients` updates carry N(0, (z*C)^2) per coordinate."""
    return noise_multiplier * clip_norm / math.sqrt(max(1, n_clients))


def add_gaussian_noise(update: Mapping[str, np.ndarray], std: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The update with N(0, std^2) added to every coordinate of its delta.* tensors."""
    if std == 0.0:
        return dict(update)
    return {name: (v + rng.normal(0.0, std, v.shape)).astype(v.dtype) if name.startswith(DELTA) else v
            for name, v in update.items()}


def release(update: Mapping[str, np.ndarray], clip_norm: float, noise_std: float,
            rng: np.random.Generator) -> tuple[dict[str, np.ndarray], float]:
    """What a client sends in distributed mode: the update clipped to `clip_norm`, then N(0, noise_std^2) on every
    delta.* coordinate; and its norm before clipping."""
    clipped, norm = clip_update(update, clip_norm)
    return add_gaussian_noise(clipped, noise_std, rng), norm


def noise_adder(std: float, rng: np.random.Generator) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None:
    """What adds a client's share of the noise to its clipped values under secure aggregation (the `transform`
    hook of `fedser_shared.secagg.encode`, before quantising); None without noise."""
    if std == 0.0:
        return None
    return lambda values: add_gaussian_noise(values, std, rng)
