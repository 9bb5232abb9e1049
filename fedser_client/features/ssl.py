"""s3prl upstreams (apc, tera, decoar2, distilhubert) from a local checkpoint: the last hidden layer, averaged over time.

Nothing is downloaded: the `*_local` entry points load the file given with --upstream-ckpt.
s3prl is installed without its declared dependencies (see docs/features.md); before it is
imported, `torchaudio_compat.install()` provides the few torchaudio functions apc, tera and
decoar2 use when the real torchaudio cannot be loaded, and TERA's positional table (built
with Python loops: ~45 s and 1 GB per process) is replaced with the same table computed
in one vectorised step.

Long files run in windows of WINDOW_SECONDS; the utterance vector is the frame-weighted
mean of the windows' means, so memory does not grow with the file's length.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fedser_client.features import torchaudio_compat
from fedser_client.features.interface import ExtractorIdentity
from fedser_shared.config import FEATURE_DIMS
from fedser_shared.errors import ConfigError

WINDOW_SECONDS = 20.0
SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Upstream:
    module: str        # s3prl.upstream.<module>.hubconf
    entry: str         # its local-checkpoint entry point
    hidden_key: str    # which output of the upstream is the last hidden layer
    expected_file: str  # the published checkpoint, named in errors


UPSTREAMS = {
    "apc": Upstream("apc", "apc_local", "last_hidden_state", "apc_360hr.ckpt"),
    "tera": Upstream("tera", "tera_local", "last_hidden_state", "tera_960hr checkpoint (states-1000000.ckpt)"),
    "decoar2": Upstream("decoar2", "decoar2_local", "last_hidden_state", "checkpoint_decoar2.pt"),
    # distiller's last_hidden_state is a prediction head's output; `paper` is its last transformer layer
    "distilhubert": Upstream("distiller", "distiller_local", "paper", "distilhubert_ls960_4-8-12.ckpt"),
}


@lru_cache(maxsize=8)
def _sinusoid_table(hidden_size: int) -> torch.Tensor:
    from s3prl.upstream.mockingjay import builder

    position = np.arange(builder.MAX_SEQLEN, dtype=np.float64)[:, None]
    index = np.arange(hidden_size)[None, :]
    table = position / np.power(10000, 2 * (index // 2) / hidden_size)
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.FloatTensor(table)


def _prepare_s3prl(name: str, module: str) -> object:
    if importlib.util.find_spec("s3prl") is None:
        raise ConfigError(f"feature '{name}' needs s3prl: pip install -e '.[ssl]' && pip install --no-deps s3prl==0.4.18 "
                          "(see docs/features.md)")
    torchaudio_compat.install()
    try:
        hubconf = importlib.import_module(f"s3prl.upstream.{module}.hubconf")
    except ImportError as exc:
        raise ConfigError(f"s3prl upstream '{module}' cannot be imported ({exc}); see docs/features.md for the install") from None
    if module == "tera":
        from s3prl.upstream.mockingjay import builder

        builder.get_sinusoid_table = _sinusoid_table
    return hubconf


@contextmanager
def _trusted_checkpoint_loading() -> Iterator[None]:
    """Let s3prl's bare `torch.load(ckpt)` calls read published checkpoints, which pickle config objects.

    Since torch 2.6 such calls default to weights_only=True; the file is one the device owner chose."""
    previous = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if previous is None:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = previous


def _require_all_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """decoar2 loads with strict=False: a checkpoint lacking weights would silently leave random ones."""
    state = torch.load(ckpt, map_location="cpu", mmap=True, weights_only=False)["model"]
    missing = sorted(set(model.model.state_dict()) - set(state))  # type: ignore[union-attr]
    if missing:
        raise ConfigError(f"--upstream-ckpt {ckpt} lacks {len(missing)} decoar2 weights (e.g. {missing[0]})")


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a rewritten file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _checked_ckpt(name: str, ckpt: Path | None) -> Path:
    expected = UPSTREAMS[name].expected_file
    if ckpt is None:
        raise ConfigError(f"feature '{name}' needs a local s3prl checkpoint: pass --upstream-ckpt PATH "
                          f"(expected file: {expected}; nothing is downloaded)")
    if not Path(ckpt).is_file():
        raise ConfigError(f"--upstream-ckpt {ckpt} does not exist: feature '{name}' expects the s3prl "
                          f"checkpoint file {expected}")
    return Path(ckpt)


def ssl_identity(name: str, ckpt: Path | None) -> ExtractorIdentity:
    if name not in UPSTREAMS:
        raise ConfigError(f"'{name}' is not an s3prl upstream; known: {', '.join(UPSTREAMS)}")
    path = _checked_ckpt(name, ckpt)
    version = f"s3prl-0.4.18-{name}-{UPSTREAMS[name].hidden_key}-mean-window{WINDOW_SECONDS:g}s-1"
    return ExtractorIdentity(name, FEATURE_DIMS[name], version, f"ckpt-sha256={_file_sha256(path)}")


class S3prlExtractor:
    def __init__(self, name: str, ckpt: Path | None, device: str = "cpu") -> None:
        identity = ssl_identity(name, ckpt)
        upstream = UPSTREAMS[name]
        ckpt = Path(ckpt)  # type: ignore[arg-type]  # checked by ssl_identity
        hubconf = _prepare_s3prl(name, upstream.module)
        try:
            with _trusted_checkpoint_loading(), redirect_stdout(io.StringIO()):  # s3prl prints; our summary says what matters
                model = getattr(hubconf, upstream.entry)(str(ckpt))
            if name == "decoar2":
                _require_all_weights(model, ckpt)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to build from the file is a bad checkpoint
            raise ConfigError(f"--upstream-ckpt {ckpt} is not a usable {name} checkpoint "
                              f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None
        self.name, self.dim, self.version, self.settings = identity.name, identity.dim, identity.version, identity.settings
        self._hidden_key = upstream.hidden_key
        self._device = torch.device(device)
        self._model = model.to(self._device).eval()
        probe = self._frames(np.zeros(SAMPLE_RATE, np.float32) + 1e-3)[0]
        if probe.shape[-1] != self.dim:
            raise ConfigError(f"--upstream-ckpt {ckpt} gives {probe.shape[-1]}-dim hidden states; "
                              f"feature '{name}' is {self.dim}-dim")

    @torch.inference_mode()
    def _frames(self, window: np.ndarray) -> tuple[torch.Tensor, int]:
        wav = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32)).to(self._device)
        hidden = self._model([wav])[self._hidden_key]  # [1, frames, dim]
        return hidden[0].sum(dim=0).double().cpu(), int(hidden.shape[1])

    def extract(self, waveform: np.ndarray) -> np.ndarray:
        step = int(WINDOW_SECONDS * SAMPLE_RATE)
        total, frames = torch.zeros(self.dim, dtype=torch.float64), 0
        for start in range(0, len(waveform), step):
            window = waveform[start:start + step]
            if start and len(window) < SAMPLE_RATE // 10:
                break  # a sliver at the end of a long file adds no frame
            summed, count = self._frames(window)
            total += summed
            frames += count
        return (total / max(frames, 1)).float().numpy()


def make_ssl_extractor(name: str, upstream_ckpt: Path | None, device: str = "cpu") -> S3prlExtractor:
    return S3prlExtractor(name, upstream_ckpt, device)
