"""The SER model of DESIGN §5: an MLP D -> 256 -> 128 -> C with ReLU and dropout.

Dropout draws from an explicit `torch.Generator` so that local training is reproducible
per client and per round, whatever else runs in the process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedser_shared.tensor_names import WEIGHT as WEIGHT_PREFIX
from fedser_shared.weights import initial_weights

__all__ = ["WEIGHT_PREFIX", "EmotionMLP", "Hidden", "build_model", "load_weights", "weights_of"]


@dataclass(frozen=True)
class Hidden:
    """One hidden layer's activations in a forward pass."""

    input: torch.Tensor
    relu: torch.Tensor                 # relu(linear(input))
    dropout_mask: torch.Tensor | None  # the kept units (1.0) in training mode
    output: torch.Tensor               # relu * mask / keep in training mode, else relu


class EmotionMLP(nn.Module):
    def __init__(self, input_dim: int, num_classes: int, hidden: Sequence[int] = (256, 128), dropout: float = 0.2) -> None:
        super().__init__()
        sizes = [input_dim, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], num_classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.forward_kept(x, generator)[0]

    def forward_kept(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[Hidden]]:
        """The logits, and what each hidden layer read and produced: what a backward pass needs."""
        kept = []
        for layer in self.hidden:
            layer_input = x
            x = relu = torch.relu(layer(x))
            mask = None
            if self.training and self.dropout > 0:
                keep = 1.0 - self.dropout
                mask = torch.empty_like(x).bernoulli_(keep, generator=generator)
                x = x * mask / keep
            kept.append(Hidden(layer_input, relu, mask, x))
        logits: torch.Tensor = self.head(x)
        return logits, kept


def build_model(input_dim: int, num_classes: int, hidden: Sequence[int], dropout: float, seed: int) -> EmotionMLP:
    """A model holding `initial_weights(..., seed)`: the weights the server starts a run from."""
    with torch.random.fork_rng(devices=[]):  # nn.Linear's own initialisation would draw from the global stream
        model = EmotionMLP(input_dim, num_classes, hidden, dropout)
    load_weights(model, initial_weights(input_dim, num_classes, hidden, seed))
    return model


def weights_of(model: nn.Module) -> dict[str, np.ndarray]:
    """Model parameters as float32 numpy arrays named ``w.<param>`` (the wire names)."""
    return {WEIGHT_PREFIX + name: p.detach().cpu().numpy().astype(np.float32, copy=True) for name, p in model.named_parameters()}


def load_weights(model: nn.Module, weights: Mapping[str, np.ndarray]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(np.asarray(weights[WEIGHT_PREFIX + name])))
