"""The model's weights as numpy arrays: their wire names and the initial values of a run.

No torch here: the server builds the initial global model from this module alone, so it never
loads torch (seconds of start-up, ~200 MB of memory). `fedser_shared.model.EmotionMLP` has
exactly these parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedser_shared.tensor_names import WEIGHT as WEIGHT_PREFIX


def layer_sizes(input_dim: int, num_classes: int, hidden: Sequence[int]) -> list[tuple[str, int, int]]:
    """(parameter name stem, fan_in, fan_out) of each linear layer, in EmotionMLP's order."""
    sizes = [input_dim, *hidden]
    layers = [(f"hidden.{i}", a, b) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    return [*layers, ("head", sizes[-1], num_classes)]


def initial_weights(input_dim: int, num_classes: int, hidden: Sequence[int], seed: int) -> dict[str, np.ndarray]:
    """A freshly initialised model, named ``w.<param>``; the same seed gives the same weights everywhere.

    The distribution is torch's nn.Linear default (kaiming-uniform with a=sqrt(5)):
    weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from one seeded numpy Generator.
    """
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for stem, fan_in, fan_out in layer_sizes(input_dim, num_classes, hidden):
        bound = 1.0 / np.sqrt(fan_in) if fan_in > 0 else 0.0
        weights[f"{WEIGHT_PREFIX}{stem}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
        weights[f"{WEIGHT_PREFIX}{stem}.bias"] = rng.uniform(-bound, bound, fan_out).astype(np.float32)
    return weights
