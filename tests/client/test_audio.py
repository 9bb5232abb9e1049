"""Decoding: any rate and channel count to 16 kHz mono in [-1, 1], bad audio as a DataError with a reason."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fedser_client.data.audio import TARGET_RATE, check_usable, load_audio
from fedser_shared.errors import DataError


def _tone(rate: int, seconds: float, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_six_channel_48k_is_mixed_down_and_resampled(tmp_path: Path) -> None:
    mono = _tone(48_000, 1.0)
    sf.write(tmp_path / "six.wav", np.repeat(mono[:, None], 6, axis=1), 48_000, subtype="FLOAT")
    waveform = load_audio(tmp_path / "six.wav")
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert abs(len(waveform) - TARGET_RATE) <= 2
    # band-limited resampling keeps a 440 Hz tone's amplitude and pitch
    assert np.max(np.abs(waveform[2000:-2000])) == pytest.approx(0.5, abs=0.01)
    spectrum = np.abs(np.fft.rfft(waveform))
    assert np.argmax(spectrum) * TARGET_RATE / len(waveform) == pytest.approx(440, abs=2)


def test_samples_are_clipped_to_unit_range(tmp_path: Path) -> None:
    sf.write(tmp_path / "loud.wav", _tone(16_000, 0.5, amplitude=3.0), 16_000, subtype="FLOAT")
    waveform = load_audio(tmp_path / "loud.wav")
    assert waveform.max() <= 1.0 and waveform.min() >= -1.0


def test_long_file_decodes_in_bounded_memory(tmp_path: Path) -> None:
    # 60 s of 6-channel 48 kHz float audio is 69 MB decoded at once; streaming holds ~ the 16 kHz mono result (3.8 MB)
    seconds = 60
    with sf.SoundFile(tmp_path / "long.wav", "w", 48_000, 6, subtype="PCM_16") as handle:
        block = np.repeat(_tone(48_000, 1.0)[:, None], 6, axis=1)
        for _ in range(seconds):
            handle.write(block)
    tracemalloc.start()
    waveform = load_audio(tmp_path / "long.wav")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(waveform) == pytest.approx(seconds * TARGET_RATE, abs=4)
    assert peak < 3 * waveform.nbytes + 16e6


def test_file_over_the_length_limit_is_refused_without_decoding(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", _tone(16_000, 2.0), 16_000)
    with pytest.raises(DataError, match="longer than"):
        load_audio(tmp_path / "a.wav", max_seconds=1.0)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00", b"not audio at all, just text\n" * 20])
def test_undecodable_bytes_raise_a_data_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "x.wav").write_bytes(content)
    with pytest.raises(DataError, match="cannot decode|empty"):
        load_audio(tmp_path / "x.wav")


def test_nan_samples_raise_a_data_error(tmp_path: Path) -> None:
    sf.write(tmp_path / "nan.wav", np.full(16_000, np.nan, np.float32), 16_000, subtype="FLOAT")
    with pytest.raises(DataError, match="NaN"):
        load_audio(tmp_path / "nan.wav")


def test_short_and_silent_clips_are_not_usable() -> None:
    with pytest.raises(DataError, match="shorter than 100 ms"):
        check_usable(_tone(16_000, 0.05))
    with pytest.raises(DataError, match="silent"):
        check_usable(np.zeros(16_000, np.float32))
    check_usable(_tone(16_000, 0.1))
