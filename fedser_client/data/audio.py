"""Decode any audio file soundfile reads to 16 kHz mono float32 in [-1, 1].

Mixing down and resampling (soxr, band-limited) happen block by block, so a long file is
decoded in bounded memory; only the 16 kHz mono result is held.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from fedser_shared.errors import DataError

TARGET_RATE = 16_000
BLOCK_FRAMES = 1 << 18
MAX_SECONDS = 30 * 60


def load_audio(path: Path, target_rate: int = TARGET_RATE, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    try:
        with sf.SoundFile(str(path)) as handle:
            rate = handle.samplerate
            if handle.frames > max_seconds * rate:
                raise DataError(f"{path}: {handle.frames / rate:.0f} s is longer than the {max_seconds:.0f} s limit")
            resampler = None if rate == target_rate else soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ")
            pieces: list[np.ndarray] = []
            while True:
                block = handle.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                last = len(block) < BLOCK_FRAMES
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                if len(mono):
                    pieces.append(np.asarray(mono, dtype=np.float32))
                if last:
                    break
    except DataError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot decode audio ({exc})") from None
    waveform = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if waveform.size == 0:
        raise DataError(f"{path}: audio is empty")
    if not np.isfinite(waveform).all():
        raise DataError(f"{path}: audio contains NaN or infinite samples")
    return np.clip(waveform, -1.0, 1.0)
