"""fedser's torchaudio stand-in: Kaldi filter banks, HTK mel, MFCC and deltas behave as torchaudio defines them.

(Checked against torchaudio 2.11's own Python code: fbank within 7e-5 in log energy, deltas and DCT exact,
mel filters within 1.2e-5; see docs/features.md.) These tests need neither torchaudio nor s3prl.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

from fedser_client.features import torchaudio_compat as ta


def _tone(hz: float, seconds: float = 1.0, rate: int = 16_000) -> torch.Tensor:
    t = torch.arange(int(rate * seconds)) / rate
    return (0.5 * torch.sin(2 * math.pi * hz * t)).unsqueeze(0)


def test_fbank_frames_and_bins_follow_kaldi_framing() -> None:
    features = ta.fbank(_tone(440.0), num_mel_bins=80, sample_frequency=16_000, window_type="hamming")
    # snip_edges: 1 + (16000 - 400) // 160 frames of 80 log mel energies
    assert features.shape == (98, 80)
    assert ta.fbank(_tone(440.0, seconds=0.01)).shape == (0, 23)


def test_fbank_energy_peaks_in_the_mel_bin_of_the_tone() -> None:
    def peak_bin(hz: float) -> int:
        return int(ta.fbank(_tone(hz), num_mel_bins=40).mean(dim=0).argmax())

    low, mid, high = peak_bin(300.0), peak_bin(1000.0), peak_bin(4000.0)
    assert low < mid < high
    mel = lambda f: 1127.0 * math.log(1 + f / 700.0)  # noqa: E731 - Kaldi's mel scale
    delta = (mel(8000.0) - mel(20.0)) / 41
    assert abs(mid - ((mel(1000.0) - mel(20.0)) / delta - 1)) <= 1


def test_deltas_of_a_ramp_are_its_slope() -> None:
    ramp = torch.arange(20, dtype=torch.float32).repeat(3, 1) * 2.0  # slope 2 along time
    deltas = ta.compute_deltas(ramp.unsqueeze(0))[0]
    assert torch.allclose(deltas[:, 2:-2], torch.full((3, 16), 2.0))
    assert torch.allclose(ta.ComputeDeltas()(ramp), ta.compute_deltas(ramp))


def test_mel_filters_are_triangles_that_cover_the_band() -> None:
    banks = ta.melscale_fbanks(201, 0.0, 8000.0, 40, 16_000)
    assert banks.shape == (201, 40) and banks.min() >= 0 and banks.max() <= 1.0
    assert (banks.sum(dim=1)[5:-5] > 0).all()


def test_dct_is_orthonormal() -> None:
    dct = ta.create_dct(40, 40, "ortho")
    assert torch.allclose(dct.T @ dct, torch.eye(40), atol=1e-5)


def test_mfcc_and_spectrogram_shapes_match_torchaudio() -> None:
    wav = _tone(440.0).repeat(2, 1).unsqueeze(0)  # [1, 2 channels, 16000]
    mfcc = ta.MFCC(sample_rate=16_000, n_mfcc=13, log_mels=True, melkwargs={"n_fft": 400, "hop_length": 160, "win_length": 400})
    assert mfcc(wav).shape == (1, 2, 13, 101)
    assert ta.MelScale(n_mels=80)(ta.Spectrogram(400, 400, 160)(wav)).shape == (1, 2, 80, 101)


def test_unsupported_options_raise_instead_of_computing_something_else() -> None:
    with pytest.raises(NotImplementedError):
        ta.fbank(_tone(440.0), vtln_warp=0.9)
    with pytest.raises(NotImplementedError):
        ta.MelScale(norm="slaney")


def test_install_registers_the_stand_in_only_when_torchaudio_is_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "torchaudio"}
    try:
        for name in saved:
            del sys.modules[name]
        with monkeypatch.context() as patch:
            patch.setattr("builtins.__import__", _failing_import(__import__))
            assert ta.install() is True
        from torchaudio.compliance import kaldi  # the stand-in, importable like the real one

        assert kaldi.fbank is ta.fbank
        assert ta.install() is True  # idempotent
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "torchaudio"]:
            del sys.modules[name]
        sys.modules.update(saved)


def _failing_import(real):  # type: ignore[no-untyped-def]
    def fake(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.split(".")[0] == "torchaudio":
            raise OSError("libtorchaudio.so: cannot open shared object file")  # the broken CUDA wheel
        return real(name, *args, **kwargs)

    return fake
