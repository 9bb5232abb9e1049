"""The name -> extractor registry: which module builds each feature set, and what a worker needs to build one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedser_client.features.interface import ExtractorIdentity, FeatureExtractor
from fedser_shared.config import FEATURE_DIMS, OPENSMILE_NAMES
from fedser_shared.errors import ConfigError

__all__ = ["ExtractorIdentity", "ExtractorSpec", "FeatureExtractor", "make_extractor"]


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
