"""The tensor names of the wire contract (docs/protocol.md): one place for their prefixes.

A global state holds `w.<param>` (weights) and, under SCAFFOLD, `c.<param>` (the server control
variate). An update holds `delta.<param>` for each `w.<param>` and `dc.<param>` for each
`c.<param>`.
"""

from __future__ import annotations

WEIGHT = "w."
CONTROL = "c."
DELTA = "delta."
DELTA_CONTROL = "dc."

UPDATE_PREFIX = {WEIGHT: DELTA, CONTROL: DELTA_CONTROL}  # state prefix -> the update's prefix for it


def param_of(name: str, prefix: str) -> str:
    """'w.head.bias', 'w.' -> 'head.bias'."""
    return name[len(prefix):]


def update_name(state_name: str) -> str:
    """The update tensor that answers a state tensor: 'w.x' -> 'delta.x', 'c.x' -> 'dc.x'."""
    for state_prefix, update_prefix in UPDATE_PREFIX.items():
        if state_name.startswith(state_prefix):
            return update_prefix + state_name[len(state_prefix):]
    raise ValueError(f"'{state_name}' is not a state tensor name (w.* or c.*)")
