"""Decode any audio file soundfile reads to 16 kHz mono float32 in [-1, 1].

Mixing down and resampling (soxr, band-limited) happen block by block, so a long file is
decoded in bounded memory: only the 16 kHz mono result is held, and its length is capped.
Errors are `DataError`s whose message is the reason alone; callers attach the file name.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from fedser_shared.errors import DataError

TARGET_RATE = 16_000
BLOCK_FRAMES = 1 << 16
MAX_SECONDS = 30 * 60
MIN_SECONDS = 0.1
SILENCE_PEAK = 1e-4  # -80 dBFS: below this a recording carries nothing to hear
# part of every feature cache key: bump it when the samples load_audio returns change
FRONT_END = f"mono-mean/soxr-HQ/{TARGET_RATE}Hz/clip-1"


def load_audio(path: Path, target_rate: int = TARGET_RATE, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    try:
        with sf.SoundFile(str(path)) as handle:
            rate = handle.samplerate
            if handle.frames > max_seconds * rate:
                raise DataError(f"{handle.frames / rate:.0f} s is longer than the {max_seconds:.0f} s limit")
            resampler = None if rate == target_rate else soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ")
            pieces: list[np.ndarray] = []
            while True:
                block = handle.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                last = len(block) < BLOCK_FRAMES
                mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                if len(mono):
                    pieces.append(np.array(mono, dtype=np.float32))
                if last:
                    break
    except DataError:
        raise
    except (sf.LibsndfileError, sf.SoundFileRuntimeError, RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"cannot decode audio ({_first_line(exc)})") from None
    waveform = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if waveform.size == 0:
        raise DataError("audio is empty (no samples)")
    if not np.isfinite(waveform).all():
        raise DataError("audio contains NaN or infinite samples")
    return np.clip(waveform, -1.0, 1.0)


def check_usable(waveform: np.ndarray, rate: int = TARGET_RATE) -> None:
    """Refuse what would only give a meaningless feature vector: a too short clip, digital silence."""
    if len(waveform) < MIN_SECONDS * rate:
        raise DataError(f"clip is {1000 * len(waveform) / rate:.0f} ms long, shorter than {1000 * MIN_SECONDS:.0f} ms")
    if float(np.max(np.abs(waveform))) < SILENCE_PEAK:
        raise DataError("audio is silent (peak below -80 dBFS)")


def _first_line(exc: BaseException) -> str:
    # libsndfile names the file ("Error opening '/x/y.wav': ..."); the caller names it already
    text = re.sub(r"^Error( opening '.*?')?\s*:\s*", "", str(exc).strip()).splitlines()
    return text[0] if text else type(exc).__name__
