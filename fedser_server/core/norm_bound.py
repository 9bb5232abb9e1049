"""The optional bound on how far one update may move the model (docs/security.md).

The receiver measures the L2 norm of an update's delta.* tensors while it streams in; this
decides, from that one number, whether the update is refused or by what factor its deltas are
scaled when folded into the running sums. Without a bound every update counts as sent.
"""

from __future__ import annotations

from typing import Literal

from fedser_shared.errors import NormBoundError


def delta_scale(norm: float | None, bound: float | None, action: Literal["refuse", "clip"]) -> float:
    """1.0 for an update within the bound; bound/norm for one above it under "clip"; raises under "refuse"."""
    if bound is None or norm is None or norm <= bound:
        return 1.0
    if action == "refuse":
        raise NormBoundError(f"update norm {norm:.6g} exceeds the bound of {bound:g} (federation.update_norm_max)")
    return bound / norm
