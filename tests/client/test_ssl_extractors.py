"""s3prl upstreams from small random-weight checkpoints: dimensions, determinism, windows, clear errors.

Skipped when s3prl is not installed (it is the `ssl` extra plus `pip install --no-deps s3prl==0.4.18`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3prl")
torch = pytest.importorskip("torch")

from fedser_client.features.base import make_extractor  # noqa: E402
from fedser_client.features.torchaudio_compat import install as install_torchaudio  # noqa: E402
from fedser_shared.config import FEATURE_DIMS  # noqa: E402
from fedser_shared.errors import ConfigError  # noqa: E402

install_torchaudio()
UPSTREAMS = ["apc", "tera", "decoar2", "distilhubert"]


def _apc(path: Path) -> None:
    from s3prl.upstream.apc.apc import APC

    paras = {"hidden_size": 512, "num_layers": 3, "dropout": 0.0, "residual": True}
    audio = {"feat_type": "fbank", "feat_dim": 80, "frame_length": 25, "frame_shift": 10, "dither": 0.0, "cmvn": True}
    torch.save({"config": {"data": {"audio": audio}, "model": {"paras": paras}}, "model": APC(80, **paras).state_dict()}, path)


def _tera(path: Path) -> None:
    from s3prl.upstream.mockingjay.model import TransformerConfig, TransformerModel

    feat = {"feat_type": "mel", "channel": 0, "log": True, "delta": 0, "cmvn": True}
    config = {
        "transformer": {"hidden_size": 768, "num_hidden_layers": 1, "num_attention_heads": 12, "hidden_act": "gelu",
                        "intermediate_size": 3072, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "share_layer": False, "pre_layer_norm": False},
        "task": {"sequence_length": 0},
        "audio": {"target_level": -25, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": 80, "n_mfcc": 13,
                  "input": dict(feat), "target": dict(feat)},
    }
    model = TransformerModel(TransformerConfig(config["transformer"]), 80)
    torch.save({"Config": {}, "Upstream_Config": config, "Transformer": model.state_dict()}, path)


def _decoar2(path: Path) -> None:
    from s3prl.upstream.decoar2.decoar2 import Decoar2

    torch.save({"model": Decoar2().state_dict()}, path)


def _distilhubert(path: Path) -> None:
    from s3prl.upstream.distiller.model import DistillerConfig, DistillerModel

    config = {"distiller": {"encoder_layers": 1, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
                            "encoder_attention_heads": 12, "n_tasks": 1, "pred_layer_id": [1], "final_dim": 768,
                            "extractor_conv_feature_layers": "[(64,10,5)] + [(64,3,2)] * 4 + [(64,2,2)] * 2"}}
    torch.save({"Config": config, "Distiller": DistillerModel(DistillerConfig(config["distiller"])).state_dict()}, path)


@pytest.fixture(autouse=True)
def _small_decoar2(monkeypatch: pytest.MonkeyPatch) -> None:
    # decoar2's architecture is fixed in code (12 layers, 340 MB); one layer keeps the test checkpoint small
    from s3prl.upstream.decoar2 import decoar2

    monkeypatch.setitem(decoar2.args, "encoder_layers", 1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from s3prl.upstream.decoar2 import decoar2

    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    paths = {}
    layers = decoar2.args["encoder_layers"]
    decoar2.args["encoder_layers"] = 1
    try:
        for name, build in {"apc": _apc, "tera": _tera, "decoar2": _decoar2, "distilhubert": _distilhubert}.items():
            paths[name] = folder / f"{name}.ckpt"
            build(paths[name])
    finally:
        decoar2.args["encoder_layers"] = layers
    return paths


@pytest.fixture(scope="module")
def extractors(checkpoints: dict[str, Path]) -> dict[str, object]:
    """One extractor per upstream, built on first use and shared (building is the slow part)."""

    class Lazy(dict):  # type: ignore[type-arg]
        def __missing__(self, name: str) -> object:
            self[name] = make_extractor(name, checkpoints[name])
            return self[name]

    return Lazy()


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16_000 * seconds)) / 16_000
    return (0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + rng.normal(0, 0.05, t.shape)).astype(np.float32)


@pytest.mark.parametrize("name", UPSTREAMS)
def test_upstream_gives_a_deterministic_vector_of_the_configured_size(
    name: str, checkpoints: dict[str, Path], extractors: dict[str, object],
) -> None:
    extractor = extractors[name]
    assert extractor.dim == FEATURE_DIMS[name]
    clip = _speech_like(1.0, 1)
    first = extractor.extract(clip)
    assert first.shape == (FEATURE_DIMS[name],) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, extractor.extract(clip))
    np.testing.assert_allclose(make_extractor(name, checkpoints[name]).extract(clip), first, rtol=1e-5, atol=1e-6)
    assert not np.allclose(extractor.extract(_speech_like(1.0, 2)), first)


@pytest.mark.parametrize("name", ["distilhubert", "apc"])
def test_long_audio_runs_in_windows(name: str, extractors: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> None:
    from fedser_client.features import ssl

    extractor = extractors[name]
    clip = _speech_like(2.5, 3)
    whole = extractor.extract(clip)
    monkeypatch.setattr(ssl, "WINDOW_SECONDS", 1.0)
    windowed = extractor.extract(clip)
    assert windowed.shape == whole.shape and np.isfinite(windowed).all()
    # the frame-weighted mean of windows stays close to the whole-utterance mean
    assert np.corrcoef(windowed, whole)[0, 1] > 0.9


def test_the_checkpoint_hash_is_part_of_the_cache_key(checkpoints: dict[str, Path], extractors: dict[str, object]) -> None:
    import hashlib

    digest = hashlib.sha256(checkpoints["apc"].read_bytes()).hexdigest()
    assert extractors["apc"].settings == f"ckpt-sha256={digest}"  # type: ignore[attr-defined]


def test_missing_checkpoint_names_the_expected_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist.*distilhubert_ls960_4-8-12\.ckpt"):
        make_extractor("distilhubert", tmp_path / "nope.ckpt")
    with pytest.raises(ConfigError, match=r"--upstream-ckpt PATH.*apc_360hr\.ckpt"):
        make_extractor("apc", None)


def test_a_file_that_is_not_a_checkpoint_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a usable tera checkpoint"):
        make_extractor("tera", tmp_path / "bad.ckpt")


def test_decoar2_checkpoint_lacking_weights_is_refused(tmp_path: Path) -> None:
    torch.save({"model": {}}, tmp_path / "empty.ckpt")
    with pytest.raises(ConfigError, match="lacks .* decoar2 weights"):
        make_extractor("decoar2", tmp_path / "empty.ckpt")


def test_tera_positional_table_matches_the_reference_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    from s3prl.upstream.mockingjay import builder

    from fedser_client.features.ssl import _sinusoid_table

    monkeypatch.setattr(builder, "MAX_SEQLEN", 40)
    _sinusoid_table.cache_clear()
    hidden = 12
    reference = np.array([[pos / np.power(10000, 2 * (j // 2) / hidden) for j in range(hidden)] for pos in range(40)])
    reference[:, 0::2] = np.sin(reference[:, 0::2])
    reference[:, 1::2] = np.cos(reference[:, 1::2])
    np.testing.assert_allclose(_sinusoid_table(hidden).numpy(), reference, rtol=1e-6, atol=1e-6)
    _sinusoid_table.cache_clear()
