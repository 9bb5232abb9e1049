"""openSMILE functionals: one fixed-length vector per utterance, for the sets SER papers report.

`emobase` (988 values), `egemaps` (eGeMAPSv02, 88) and `compare` (ComParE_2016, 6,373) differ
only in the openSMILE configuration, so one extractor serves all three.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import opensmile

MIN_SAMPLES = 1600  # 0.1 s; eGeMAPS and ComParE return NaNs for shorter signals


@dataclass(frozen=True)
class OpenSmileSet:
    feature_set: opensmile.FeatureSet
    dim: int


OPENSMILE_SETS: dict[str, OpenSmileSet] = {
    "emobase": OpenSmileSet(opensmile.FeatureSet.emobase, 988),
    "egemaps": OpenSmileSet(opensmile.FeatureSet.eGeMAPSv02, 88),
    "compare": OpenSmileSet(opensmile.FeatureSet.ComParE_2016, 6373),
}


def opensmile_version(name: str) -> str:
    """The cache-key version of a set's vectors (emobase's is the one its caches were written under)."""
    return f"opensmile-{opensmile.__version__}-{name}-functionals-1"


class OpenSmileExtractor:
    settings = ""

    def __init__(self, name: str) -> None:
        chosen = OPENSMILE_SETS[name]
        self.name = name
        self.dim = chosen.dim
        self.version = opensmile_version(name)
        self._smile = opensmile.Smile(feature_set=chosen.feature_set, feature_level=opensmile.FeatureLevel.Functionals)

    def extract(self, waveform: np.ndarray) -> np.ndarray:
        signal = np.asarray(waveform, dtype=np.float32)
        if len(signal) < MIN_SAMPLES:
            signal = np.pad(signal, (0, MIN_SAMPLES - len(signal)))
        values: np.ndarray = self._smile.process_signal(signal, 16_000).to_numpy(dtype=np.float32).reshape(-1)
        finite: np.ndarray = np.where(np.isfinite(values), values, np.float32(0.0))
        return finite
