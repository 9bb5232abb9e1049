"""eGeMAPS and ComParE functionals over real audio files: the vector each set promises, cached and resumable
like emobase, bad files skipped with a reason, the same vectors every time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fedser_client.data.labels import scan_data_dir
from fedser_client.features.base import ExtractorSpec
from fedser_client.features.cache import fingerprint
from fedser_client.features.opensmile_functionals import OpenSmileExtractor
from fedser_client.features.pipeline import ExtractionProgress, FeatureTable, extract_features
from fedser_shared.config import LabelsConfig, load_run_config
from fedser_shared.errors import ConfigError
from tests.conftest import make_client_dir, synth_clip

DIMS = {"egemaps": 88, "compare": 6373}


class CountingExtractor:
    def __init__(self, inner: OpenSmileExtractor) -> None:
        self.inner, self.calls = inner, 0
        self.name, self.dim, self.version, self.settings = inner.name, inner.dim, inner.version, inner.settings

    def extract(self, waveform: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner.extract(waveform)


@pytest.fixture(scope="module", params=sorted(DIMS))
def extractor(request: pytest.FixtureRequest) -> OpenSmileExtractor:
    return OpenSmileExtractor(request.param)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_client_dir(tmp_path, "c", per_class=2)


def _run(folder: Path, extractor: object, cache: str = "cache", **kwargs: object) -> FeatureTable:
    spec = ExtractorSpec(extractor.name)  # type: ignore[attr-defined]
    listing = scan_data_dir(folder, LabelsConfig())
    return extract_features(folder, listing, spec, folder / ".fedser" / cache, extractor=extractor, **kwargs)  # type: ignore[arg-type]


def _add(folder: Path, rel: str, emotion: str = "happy") -> None:
    with open(folder / "labels.csv", "a") as handle:
        handle.write(f"{rel},{emotion}\n")


def test_each_file_gives_the_sets_vector_and_the_classes_differ(folder: Path, extractor: OpenSmileExtractor) -> None:
    table = _run(folder, extractor)
    assert extractor.dim == DIMS[extractor.name]
    assert table.features.shape == (8, DIMS[extractor.name]) and np.isfinite(table.features).all()
    assert table.features.dtype == np.float32 and not table.failed
    # the synthetic classes differ in pitch and loudness: their mean vectors must differ too
    means = [table.features[table.labels == c].mean(axis=0) for c in range(4)]
    assert all(not np.allclose(means[a], means[b]) for a in range(4) for b in range(a + 1, 4))


def test_the_same_audio_gives_the_same_vector_in_a_fresh_extractor_and_cache(folder: Path, extractor: OpenSmileExtractor) -> None:
    first = _run(folder, extractor, cache="one")
    second = _run(folder, OpenSmileExtractor(extractor.name), cache="two")
    assert second.extracted == 8 and second.from_cache == 0
    np.testing.assert_array_equal(first.features, second.features)


def test_a_second_run_extracts_nothing(folder: Path, extractor: OpenSmileExtractor) -> None:
    first = _run(folder, counting := CountingExtractor(extractor))
    assert counting.calls == 8
    second = _run(folder, counting := CountingExtractor(extractor))
    assert counting.calls == 0 and second.from_cache == 8
    np.testing.assert_array_equal(first.features, second.features)


def test_a_warm_run_needs_no_extractor_and_each_set_has_its_own_cache(folder: Path, extractor: OpenSmileExtractor,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _run(folder, OpenSmileExtractor("emobase"))
    fresh = _run(folder, counting := CountingExtractor(extractor))
    assert counting.calls == 8 and fresh.features.shape[1] == DIMS[extractor.name]  # emobase's vectors are not reused
    names = {p.name for p in (folder / ".fedser" / "cache").iterdir()}
    assert names == {fingerprint("emobase", OpenSmileExtractor("emobase").version, ""),
                     fingerprint(extractor.name, extractor.version, "")}
    monkeypatch.setattr(ExtractorSpec, "build", lambda self: pytest.fail("a warm run loaded the extractor"))
    warm = extract_features(folder, scan_data_dir(folder, LabelsConfig()), ExtractorSpec(extractor.name),
                            folder / ".fedser" / "cache")
    assert warm.from_cache == 8 and warm.extracted == 0
    np.testing.assert_array_equal(warm.features, fresh.features)


def test_an_interrupted_run_resumes_where_it_stopped(folder: Path, extractor: OpenSmileExtractor) -> None:
    def stop_after_three(state: ExtractionProgress) -> None:
        if state.extracted == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(folder, extractor, progress=stop_after_three)
    resumed = _run(folder, counting := CountingExtractor(extractor))
    assert resumed.from_cache == 3 and counting.calls == 5 and len(resumed.paths) == 8


def test_bad_files_are_skipped_with_a_reason_and_the_rest_extracted(folder: Path, extractor: OpenSmileExtractor) -> None:
    rng = np.random.default_rng(0)
    (folder / "audio/notes.wav").write_text("shopping list: milk, eggs\n" * 50)
    sf.write(folder / "audio/silence.wav", np.zeros(16_000, np.float32), 16_000)
    sf.write(folder / "audio/blip.wav", synth_clip(1, rng, seconds=0.05), 16_000)
    sf.write(folder / "audio/cut.ogg", synth_clip(1, rng), 16_000)
    data = (folder / "audio/cut.ogg").read_bytes()
    (folder / "audio/cut.ogg").write_bytes(data[: len(data) // 2])
    for rel in ("audio/notes.wav", "audio/silence.wav", "audio/blip.wav", "audio/cut.ogg"):
        _add(folder, rel)
    table = _run(folder, extractor)
    assert table.features.shape == (8, DIMS[extractor.name]) and np.isfinite(table.features).all()
    expected = {"audio/notes.wav": "cannot decode audio", "audio/silence.wav": "silent",
                "audio/blip.wav": "shorter than 100 ms", "audio/cut.ogg": "cannot decode audio"}
    assert set(table.failed) == set(expected)
    for rel, needle in expected.items():
        assert needle in table.failed[rel] and "\n" not in table.failed[rel]


def test_a_clip_just_over_100_ms_gives_finite_values(folder: Path, extractor: OpenSmileExtractor) -> None:
    # openSMILE fills eGeMAPS and ComParE with NaN below 0.1 s; a usable short clip must still give numbers
    sf.write(folder / "audio/short.wav", synth_clip(2, np.random.default_rng(4), seconds=0.11), 16_000)
    _add(folder, "audio/short.wav", "sad")
    table = _run(folder, extractor)
    row = table.features[table.paths.index("audio/short.wav")]
    assert np.isfinite(row).all() and np.count_nonzero(row) > DIMS[extractor.name] // 2


def test_worker_processes_give_the_same_vectors_as_one_process(folder: Path) -> None:
    extractor = OpenSmileExtractor("egemaps")
    (folder / "audio/bad.wav").write_text("not audio")
    _add(folder, "audio/bad.wav")
    pooled = _run(folder, extractor, cache="pooled", workers=2)
    single = _run(folder, extractor, cache="single")
    assert pooled.paths == single.paths and pooled.extracted == 8
    np.testing.assert_array_equal(pooled.features, single.features)
    assert "cannot decode audio" in pooled.failed["audio/bad.wav"]


@pytest.mark.parametrize(("name", "dim"), sorted(DIMS.items()))
def test_the_config_takes_the_set_and_knows_its_width(name: str, dim: int) -> None:
    assert load_run_config(None, {"features.name": name}).feature_dim == dim
    assert ExtractorSpec(name).identity().dim == dim


def test_a_misspelt_set_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"'features.name'.*'egemaps'.*'compare'"):
        load_run_config(None, {"features.name": "egemap"})
