"""What a client keeps between participations (DESIGN §5), persisted under `.fedser/` by `LocalStore`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LocalState:
    control: dict[str, np.ndarray] = field(default_factory=dict)  # c_i, names "c.<param>"
    pseudo_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # MvPL pool: rows of x_train
    pseudo_label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    participations: int = 0
