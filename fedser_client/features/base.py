"""The extractor interface and the name -> extractor registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fedser_shared.config import FEATURE_DIMS, OPENSMILE_NAMES
from fedser_shared.errors import ConfigError


class FeatureExtractor(Protocol):
    name: str
    dim: int
    version: str   # part of the cache key: bump it when the output of extract() changes
    settings: str  # part of the cache key: whatever else changes the output (e.g. the checkpoint's SHA-256)

    def extract(self, waveform: np.ndarray) -> np.ndarray:
        """16 kHz mono float32 samples in [-1, 1] -> float32 vector of length `dim`."""
        ...


def make_extractor(name: str, upstream_ckpt: Path | None = None, device: str = "cpu") -> FeatureExtractor:
    if name in OPENSMILE_NAMES:
        from fedser_client.features.opensmile_functionals import OpenSmileExtractor

        return OpenSmileExtractor(name)
    if name in FEATURE_DIMS:
        try:
            from fedser_client.features.ssl import make_ssl_extractor
        except ImportError as exc:
            raise ConfigError(f"feature '{name}' needs the 'ssl' extra, see docs/features.md ({exc})") from None
        return make_ssl_extractor(name, upstream_ckpt, device)
    raise ConfigError(f"unknown feature extractor '{name}'; known: {', '.join(FEATURE_DIMS)}")


@dataclass(frozen=True)
class ExtractorIdentity:
    """What names an extractor's output in the cache, known without building it (no model load)."""

    name: str
    dim: int
    version: str
    settings: str


@dataclass(frozen=True)
class ExtractorSpec:
    """What a worker process needs to build its own extractor (an extractor itself may not pickle)."""

    name: str
    upstream_ckpt: Path | None = None
    device: str = "cpu"

    def build(self) -> FeatureExtractor:
        return make_extractor(self.name, self.upstream_ckpt, self.device)

    def identity(self) -> ExtractorIdentity:
        """Cheap: a warm run needs only this; it checks that a named checkpoint exists."""
        if self.name in OPENSMILE_NAMES:
            from fedser_client.features.opensmile_functionals import opensmile_version

            return ExtractorIdentity(self.name, FEATURE_DIMS[self.name], opensmile_version(self.name), "")
        if self.name not in FEATURE_DIMS:
            raise ConfigError(f"unknown feature extractor '{self.name}'; known: {', '.join(FEATURE_DIMS)}")
        from fedser_client.features.ssl import ssl_identity

        return ssl_identity(self.name, self.upstream_ckpt)
