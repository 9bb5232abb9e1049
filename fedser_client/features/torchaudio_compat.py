"""A small stand-in for the parts of torchaudio that s3prl's apc, tera and decoar2 upstreams use.

Those upstreams import torchaudio only for pure tensor functions: Kaldi filter banks, an
HTK mel scale, MFCCs and deltas. The torchaudio wheels published beside our CPU torch are
linked against CUDA and fail to load their native library, and torchaudio is not worth a
dependency for five functions, so `install()` puts this module tree in `sys.modules` when
(and only when) the real torchaudio cannot be imported. The functions follow torchaudio's
definitions (Kaldi's `compute-fbank-feats`, HTK mel) for the options s3prl passes;
options outside those raise instead of computing something else.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_EPS = torch.finfo(torch.float).eps


# -- torchaudio.compliance.kaldi -----------------------------------------------------------------

def _window(kind: str, size: int, blackman_coeff: float, dtype: torch.dtype) -> Tensor:
    if kind == "hanning":
        return torch.hann_window(size, periodic=False, dtype=dtype)
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46, dtype=dtype)
    if kind == "povey":
        return torch.hann_window(size, periodic=False, dtype=dtype).pow(0.85)
    if kind == "rectangular":
        return torch.ones(size, dtype=dtype)
    if kind == "blackman":
        a = 2 * math.pi / (size - 1)
        n = torch.arange(size, dtype=dtype)
        return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
    raise ValueError(f"invalid window type {kind}")


def _kaldi_mel(freq: Tensor) -> Tensor:
    return 1127.0 * torch.log(1.0 + freq / 700.0)


def _kaldi_mel_banks(num_bins: int, padded_size: int, sample_freq: float, low_freq: float, high_freq: float) -> Tensor:
    num_fft_bins = padded_size // 2
    nyquist = 0.5 * sample_freq
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"bad mel band edges: low_freq {low_freq}, high_freq {high_freq}, nyquist {nyquist}")
    mel_low, mel_high = _kaldi_mel(torch.tensor(low_freq)), _kaldi_mel(torch.tensor(high_freq))
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)
    left, center, right = mel_low + index * delta, mel_low + (index + 1) * delta, mel_low + (index + 2) * delta
    mel = _kaldi_mel(sample_freq / padded_size * torch.arange(num_fft_bins)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))  # Kaldi's extra column for the Nyquist bin


def fbank(
    waveform: Tensor, blackman_coeff: float = 0.42, channel: int = -1, dither: float = 0.0,
    energy_floor: float = 1.0, frame_length: float = 25.0, frame_shift: float = 10.0, high_freq: float = 0.0,
    htk_compat: bool = False, low_freq: float = 20.0, min_duration: float = 0.0, num_mel_bins: int = 23,
    preemphasis_coefficient: float = 0.97, raw_energy: bool = True, remove_dc_offset: bool = True,
    round_to_power_of_two: bool = True, sample_frequency: float = 16000.0, snip_edges: bool = True,
    subtract_mean: bool = False, use_energy: bool = False, use_log_fbank: bool = True, use_power: bool = True,
    vtln_high: float = -500.0, vtln_low: float = 100.0, vtln_warp: float = 1.0, window_type: str = "povey",
) -> Tensor:
    """Kaldi filter-bank features, [frames, num_mel_bins], as torchaudio.compliance.kaldi.fbank."""
    if vtln_warp != 1.0 or use_energy or htk_compat or not snip_edges:
        raise NotImplementedError("fedser's torchaudio stand-in supports fbank without VTLN, energy, htk_compat "
                                  "and with snip_edges=True; install torchaudio for the others")
    dtype = waveform.dtype if waveform.is_floating_point() else torch.float32
    signal = waveform.to(dtype)
    signal = signal[max(channel, 0)] if signal.dim() == 2 else signal
    shift = int(sample_frequency * frame_shift * 0.001)
    size = int(sample_frequency * frame_length * 0.001)
    padded = 2 ** math.ceil(math.log2(size)) if round_to_power_of_two else size
    if len(signal) < size or len(signal) < min_duration * sample_frequency:
        return torch.empty(0, num_mel_bins, dtype=dtype, device=waveform.device)
    frames = signal.unfold(0, size, shift)  # [m, size], snip_edges=True
    if dither != 0.0:
        frames = frames + dither * torch.randn_like(frames)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis_coefficient != 0.0:
        previous = F.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]
        frames = frames - preemphasis_coefficient * previous
    frames = frames * _window(window_type, size, blackman_coeff, dtype).to(frames.device).unsqueeze(0)
    if padded != size:
        frames = F.pad(frames, (0, padded - size))
    spectrum = torch.fft.rfft(frames).abs()
    if use_power:
        spectrum = spectrum.pow(2.0)
    banks = _kaldi_mel_banks(num_mel_bins, padded, sample_frequency, low_freq, high_freq).to(dtype=dtype, device=frames.device)
    energies = spectrum @ banks.T
    if use_log_fbank:
        energies = torch.clamp(energies, min=_EPS).log()
    if subtract_mean:
        energies = energies - energies.mean(dim=0, keepdim=True)
    result: Tensor = energies
    return result


# -- torchaudio.functional -----------------------------------------------------------------------

def compute_deltas(specgram: Tensor, win_length: int = 5, mode: str = "replicate") -> Tensor:
    """Regression deltas along the last (time) axis, as torchaudio.functional.compute_deltas."""
    if win_length < 3:
        raise ValueError(f"win_length must be >= 3, not {win_length}")
    shape = specgram.shape
    rows = specgram.reshape(1, -1, shape[-1])
    n = (win_length - 1) // 2
    denominator = n * (n + 1) * (2 * n + 1) / 3
    rows = F.pad(rows, (n, n), mode=mode)
    kernel = torch.arange(-n, n + 1, dtype=specgram.dtype, device=specgram.device).repeat(rows.shape[1], 1, 1)
    return (F.conv1d(rows, kernel, groups=rows.shape[1]) / denominator).reshape(shape)


def _hz_to_mel_htk(freq: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + freq / 700.0)


def _mel_to_hz_htk(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> Tensor:
    """Triangular HTK mel filters, [n_freqs, n_mels] (torchaudio's defaults: norm=None, mel_scale='htk')."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mel_points = torch.linspace(float(_hz_to_mel_htk(torch.tensor(float(f_min)))),
                                float(_hz_to_mel_htk(torch.tensor(float(f_max)))), n_mels + 2)
    freq_points = _mel_to_hz_htk(mel_points)
    diff = freq_points[1:] - freq_points[:-1]
    slopes = freq_points.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def create_dct(n_mfcc: int, n_mels: int, norm: str | None = "ortho") -> Tensor:
    n = torch.arange(float(n_mels))
    k = torch.arange(float(n_mfcc)).unsqueeze(1)
    dct = torch.cos(math.pi / float(n_mels) * (n + 0.5) * k)
    if norm == "ortho":
        dct[0] *= 1.0 / math.sqrt(2.0)
        dct *= math.sqrt(2.0 / float(n_mels))
    else:
        dct *= 2.0
    return dct.t()


# -- torchaudio.transforms -----------------------------------------------------------------------

class ComputeDeltas(nn.Module):
    def __init__(self, win_length: int = 5, mode: str = "replicate") -> None:
        super().__init__()
        self.win_length, self.mode = win_length, mode

    def forward(self, specgram: Tensor) -> Tensor:
        return compute_deltas(specgram, self.win_length, self.mode)


class Spectrogram(nn.Module):
    window: Tensor

    def __init__(self, n_fft: int = 400, win_length: int | None = None, hop_length: int | None = None, pad: int = 0,
                 window_fn: Callable[..., Tensor] = torch.hann_window, power: float | None = 2.0,
                 normalized: bool = False, center: bool = True, pad_mode: str = "reflect", onesided: bool = True) -> None:
        super().__init__()
        if pad or normalized or not onesided:
            raise NotImplementedError("fedser's torchaudio stand-in supports Spectrogram without pad/normalized, onesided")
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.register_buffer("window", window_fn(self.win_length))
        self.power, self.center, self.pad_mode = power, center, pad_mode

    def forward(self, waveform: Tensor) -> Tensor:
        shape = waveform.shape
        spec = torch.stft(waveform.reshape(-1, shape[-1]), self.n_fft, self.hop_length, self.win_length, self.window,
                          center=self.center, pad_mode=self.pad_mode, normalized=False, onesided=True,
                          return_complex=True)
        spec = spec.reshape(shape[:-1] + spec.shape[-2:])
        return spec if self.power is None else spec.abs().pow(self.power)


class MelScale(nn.Module):
    fb: Tensor

    def __init__(self, n_mels: int = 128, sample_rate: int = 16000, f_min: float = 0.0, f_max: float | None = None,
                 n_stft: int = 201, norm: str | None = None, mel_scale: str = "htk") -> None:
        super().__init__()
        if norm is not None or mel_scale != "htk":
            raise NotImplementedError("fedser's torchaudio stand-in supports MelScale with norm=None, mel_scale='htk'")
        self.register_buffer("fb", melscale_fbanks(n_stft, f_min, f_max or float(sample_rate // 2), n_mels, sample_rate))

    def forward(self, specgram: Tensor) -> Tensor:
        return torch.matmul(specgram.transpose(-1, -2), self.fb).transpose(-1, -2)


class MelSpectrogram(nn.Module):
    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, win_length: int | None = None,
                 hop_length: int | None = None, f_min: float = 0.0, f_max: float | None = None, n_mels: int = 128,
                 power: float = 2.0, center: bool = True, pad_mode: str = "reflect") -> None:
        super().__init__()
        self.spectrogram = Spectrogram(n_fft, win_length, hop_length, power=power, center=center, pad_mode=pad_mode)
        self.mel_scale = MelScale(n_mels, sample_rate, f_min, f_max, n_fft // 2 + 1)

    def forward(self, waveform: Tensor) -> Tensor:
        mel: Tensor = self.mel_scale(self.spectrogram(waveform))
        return mel


class MFCC(nn.Module):
    dct_mat: Tensor

    def __init__(self, sample_rate: int = 16000, n_mfcc: int = 40, dct_type: int = 2, norm: str = "ortho",
                 log_mels: bool = False, melkwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if dct_type != 2:
            raise NotImplementedError("only DCT type 2 is supported")
        self.mel_spectrogram = MelSpectrogram(sample_rate=sample_rate, **(melkwargs or {}))
        n_mels = int(self.mel_spectrogram.mel_scale.fb.shape[1])
        if n_mfcc > n_mels:
            raise ValueError("cannot select more MFCC coefficients than mel bins")
        self.register_buffer("dct_mat", create_dct(n_mfcc, n_mels, norm))
        self.log_mels = log_mels

    def forward(self, waveform: Tensor) -> Tensor:
        mel = self.mel_spectrogram(waveform)
        if self.log_mels:
            mel = torch.log(mel + 1e-6)
        else:  # torchaudio's AmplitudeToDB(top_db=80) for power spectrograms
            db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
            mel = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - 80.0)
        return torch.matmul(mel.transpose(-1, -2), self.dct_mat).transpose(-1, -2)


# -- installing the module tree ------------------------------------------------------------------

def _unavailable(*_: object, **__: object) -> None:
    raise RuntimeError("audio I/O is not part of fedser's torchaudio stand-in: fedser decodes audio itself")


def _build_modules() -> dict[str, types.ModuleType]:
    root = types.ModuleType("torchaudio", "fedser's stand-in for the parts of torchaudio s3prl upstreams use")
    compliance = types.ModuleType("torchaudio.compliance")
    kaldi = types.ModuleType("torchaudio.compliance.kaldi")
    functional = types.ModuleType("torchaudio.functional")
    transforms = types.ModuleType("torchaudio.transforms")
    kaldi.fbank = fbank  # type: ignore[attr-defined]
    for name, value in {"compute_deltas": compute_deltas, "melscale_fbanks": melscale_fbanks, "create_dct": create_dct}.items():
        setattr(functional, name, value)
    for cls in (ComputeDeltas, Spectrogram, MelScale, MelSpectrogram, MFCC):
        setattr(transforms, cls.__name__, cls)
    compliance.kaldi = kaldi  # type: ignore[attr-defined]
    root.__version__ = "0.0.0+fedser-stand-in"  # type: ignore[attr-defined]
    root.__path__ = []  # a package, so `from torchaudio.x import y` resolves
    root.compliance, root.functional, root.transforms = compliance, functional, transforms  # type: ignore[attr-defined]
    root.set_audio_backend = lambda *_: None  # type: ignore[attr-defined]
    root.load = root.load_wav = _unavailable  # type: ignore[attr-defined]
    return {"torchaudio": root, "torchaudio.compliance": compliance, "torchaudio.compliance.kaldi": kaldi,
            "torchaudio.functional": functional, "torchaudio.transforms": transforms}


def install() -> bool:
    """Use the real torchaudio when it imports; otherwise register the stand-in. True when the stand-in is used."""
    existing = sys.modules.get("torchaudio")
    if existing is not None:
        return str(existing.__version__).endswith("fedser-stand-in")
    try:
        import torchaudio  # noqa: F401
        from torchaudio.compliance import kaldi  # noqa: F401
        return False
    except Exception:  # noqa: BLE001 - missing, or present but its native library fails to load
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
    sys.modules.update(_build_modules())
    return True
