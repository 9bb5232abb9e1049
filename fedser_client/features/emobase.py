"""openSMILE emobase functionals: 988 values per utterance."""

from __future__ import annotations

import numpy as np
import opensmile

MIN_SAMPLES = 1600  # 0.1 s; openSMILE returns NaNs for shorter signals


class EmobaseExtractor:
    name = "emobase"
    dim = 988
    version = f"opensmile-{opensmile.__version__}-emobase-functionals-1"
    settings = ""

    def __init__(self) -> None:
        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.emobase, feature_level=opensmile.FeatureLevel.Functionals
        )

    def extract(self, waveform: np.ndarray) -> np.ndarray:
        signal = np.asarray(waveform, dtype=np.float32)
        if len(signal) < MIN_SAMPLES:
            signal = np.pad(signal, (0, MIN_SAMPLES - len(signal)))
        values = self._smile.process_signal(signal, 16_000).to_numpy(dtype=np.float32).reshape(-1)
        finite: np.ndarray = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        return finite
