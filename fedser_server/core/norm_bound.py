"""The bound on how far one update may move the model (docs/security.md).

The receiver measures the L2 norm of an update's delta.* tensors while it streams in; this
decides, from that one number, whether the update is refused or by what factor its deltas are
scaled when folded into the running sums. Two bounds, the tighter one applies:

- absolute (`federation.update_norm_max`, off by default): a fixed ceiling;
- relative (`federation.update_norm_relative` = k, 1000 by default): k times the median norm of
  the most recent accepted updates (this round's so far and the rounds before), so no single
  update moves the model much further than its peers do. Until a few updates are on record it
  is k times the norm of the global weights themselves.

Updates arrive one by one and are folded in as they come, so the median is that of the updates
already accepted, not of the whole round. Only the plain update path has single norms to bound
(with secure aggregation the server sees only sums).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedser_shared.errors import NormBoundError

RECENT_NORMS = 64      # accepted norms the relative bound looks back on
MIN_PEERS = 3          # accepted norms needed before their median is trusted
NORM_BLOCK_ELEMENTS = 1 << 20  # a norm is read a block at a time (4 MiB of float32)


def _nothing(name: str, start: int, count: int) -> None:
    pass


def l2_norm(tensors: Mapping[str, np.ndarray], prefix: str,
            read_done: Callable[[str, int, int], None] = _nothing) -> float:
    """The L2 norm of the tensors whose names start with `prefix`, taken together, read a block of
    `NORM_BLOCK_ELEMENTS` at a time; `read_done(name, first element, count)` hears each block once
    it is read (a state in a mapped file hands the block's pages back there)."""
    total = 0.0
    for name, values in tensors.items():
        if name.startswith(prefix):
            flat = values.reshape(-1)
            for start in range(0, flat.size, NORM_BLOCK_ELEMENTS):
                block = flat[start : start + NORM_BLOCK_ELEMENTS]
                total += float(np.vdot(block, block).real)
                read_done(name, start, block.size)
    return math.sqrt(total)


def delta_scale(norm: float | None, bound: float | None, action: Literal["refuse", "clip"], what: str) -> float:
    """1.0 for an update within the bound; bound/norm for one above it under "clip"; raises under "refuse"."""
    if bound is None or norm is None or norm <= bound:
        return 1.0
    if action == "refuse":
        raise NormBoundError(f"update norm {norm:.6g} exceeds the bound of {bound:.6g} ({what})")
    return bound / norm


@dataclass
class NormBound:
    absolute: float | None
    relative: float | None
    action: Literal["refuse", "clip"] = "refuse"
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_NORMS))

    def bound(self, model_norm: float) -> tuple[float | None, str]:
        """The bound an update is held to now, and what sets it (for the refusal's message)."""
        bounds: list[tuple[float, str]] = []
        if self.absolute is not None:
            bounds.append((self.absolute, "federation.update_norm_max"))
        if self.relative is not None:
            if len(self._recent) >= MIN_PEERS:
                bounds.append((self.relative * statistics.median(self._recent),
                               f"federation.update_norm_relative {self.relative:g} x the median of recent updates"))
            elif model_norm > 0:
                bounds.append((self.relative * model_norm,
                               f"federation.update_norm_relative {self.relative:g} x the global model's norm"))
        if not bounds:
            return None, ""
        return min(bounds)

    def scale(self, norm: float, model_norm: float) -> float:
        """The factor this update's deltas are folded in with (1.0, or below under "clip");
        NormBoundError under "refuse" when it is above the bound."""
        bound, what = self.bound(model_norm)
        return delta_scale(norm, bound, self.action, what)

    def accepted(self, norm: float, scale: float) -> None:
        """Remember an accepted update's norm (as folded in). A zero update says nothing of scale."""
        if norm * scale > 0:
            self._recent.append(norm * scale)
