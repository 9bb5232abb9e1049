"""What an extractor is, and what names its output in the cache: imported by the registry and by every extractor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class FeatureExtractor(Protocol):
    name: str
    dim: int
    version: str   # part of the cache key: bump it when the output of extract() changes
    settings: str  # part of the cache key: whatever else changes the output (e.g. the checkpoint's SHA-256)

    def extract(self, waveform: np.ndarray) -> np.ndarray:
        """16 kHz mono float32 samples in [-1, 1] -> float32 vector of length `dim`."""
        ...


@dataclass(frozen=True)
class ExtractorIdentity:
    """What names an extractor's output in the cache, known without building it (no model load)."""

    name: str
    dim: int
    version: str
    settings: str
