"""The extractor interface and the name -> extractor registry."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from fedser_shared.config import FEATURE_DIMS
from fedser_shared.errors import ConfigError


class FeatureExtractor(Protocol):
    name: str
    dim: int
    version: str  # part of the cache key: bump it when the output of extract() changes

    def extract(self, waveform: np.ndarray) -> np.ndarray:
        """16 kHz mono float32 samples in [-1, 1] -> float32 vector of length `dim`."""
        ...


def make_extractor(name: str, upstream_ckpt: Path | None = None, device: str = "cpu") -> FeatureExtractor:
    if name == "emobase":
        from fedser_client.features.emobase import EmobaseExtractor

        return EmobaseExtractor()
    if name in FEATURE_DIMS:
        try:
            from fedser_client.features.ssl import make_ssl_extractor
        except ImportError as exc:
            raise ConfigError(f"feature '{name}' needs the 'ssl' extra: pip install 'fedser[ssl]' ({exc})") from None
        return make_ssl_extractor(name, upstream_ckpt, device)
    raise ConfigError(f"unknown feature extractor '{name}'; known: {', '.join(FEATURE_DIMS)}")
