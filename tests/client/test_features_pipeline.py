"""Extraction over a data dir: bad files skipped with a one-line reason, the rest extracted, cached by content."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fedser_client.data.labels import scan_data_dir
from fedser_client.features.base import ExtractorSpec
from fedser_client.features.opensmile_functionals import OpenSmileExtractor
from fedser_client.features.pipeline import ExtractionProgress, FeatureTable, extract_features
from fedser_shared.config import LabelsConfig
from fedser_shared.errors import DataError
from tests.conftest import make_client_dir, synth_clip

SPEC = ExtractorSpec("emobase")


class CountingExtractor:
    """emobase, counting the files it really extracts."""

    def __init__(self, inner: OpenSmileExtractor) -> None:
        self.inner, self.calls = inner, 0
        self.name, self.dim, self.version, self.settings = inner.name, inner.dim, inner.version, inner.settings

    def extract(self, waveform: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner.extract(waveform)


@pytest.fixture(scope="module")
def emobase() -> OpenSmileExtractor:
    return OpenSmileExtractor("emobase")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_client_dir(tmp_path, "c", per_class=2)


def _run(folder: Path, extractor: object, **kwargs: object) -> FeatureTable:
    listing = scan_data_dir(folder, LabelsConfig())
    return extract_features(folder, listing, SPEC, folder / ".fedser" / "features", extractor=extractor, **kwargs)  # type: ignore[arg-type]


def _add(folder: Path, rel: str, emotion: str = "happy") -> None:
    with open(folder / "labels.csv", "a") as handle:
        handle.write(f"{rel},{emotion}\n")


def _assert_skipped_with_reason(table: FeatureTable, rel: str, needle: str) -> None:
    assert rel not in table.paths
    assert needle in table.failed[rel] and "\n" not in table.failed[rel]
    assert len(table.paths) == 8  # every good file still extracted
    assert table.features.shape == (8, 988) and np.isfinite(table.features).all()


# -- the bad inputs of the issue, one test each ------------------------------------------------

def test_corrupt_file_is_skipped(folder: Path, emobase: OpenSmileExtractor) -> None:
    sf.write(folder / "audio/corrupt.flac", synth_clip(1, np.random.default_rng(0)), 16_000)
    data = bytearray((folder / "audio/corrupt.flac").read_bytes())
    data[len(data) // 3:len(data) // 3 + 500] = bytes(range(250)) * 2
    (folder / "audio/corrupt.flac").write_bytes(bytes(data))
    _add(folder, "audio/corrupt.flac")
    _assert_skipped_with_reason(_run(folder, emobase), "audio/corrupt.flac", "cannot decode audio")


def test_truncated_file_is_skipped(folder: Path, emobase: OpenSmileExtractor) -> None:
    sf.write(folder / "audio/cut.ogg", synth_clip(1, np.random.default_rng(0)), 16_000)
    data = (folder / "audio/cut.ogg").read_bytes()
    (folder / "audio/cut.ogg").write_bytes(data[: len(data) // 2])
    _add(folder, "audio/cut.ogg")
    _assert_skipped_with_reason(_run(folder, emobase), "audio/cut.ogg", "cannot decode audio")


def test_truncated_wav_keeps_the_audio_that_is_there(folder: Path, emobase: OpenSmileExtractor) -> None:
    sf.write(folder / "audio/cut.wav", synth_clip(1, np.random.default_rng(0), seconds=1.0), 16_000)
    data = (folder / "audio/cut.wav").read_bytes()
    (folder / "audio/cut.wav").write_bytes(data[: len(data) // 2])
    _add(folder, "audio/cut.wav")
    table = _run(folder, emobase)
    assert "audio/cut.wav" in table.paths and not table.failed
    assert table.audio_seconds == pytest.approx(8 * 0.5 + 0.5, abs=0.01)


def test_zero_length_file_is_skipped(folder: Path, emobase: OpenSmileExtractor) -> None:
    (folder / "audio/empty.wav").write_bytes(b"")
    _add(folder, "audio/empty.wav")
    _assert_skipped_with_reason(_run(folder, emobase), "audio/empty.wav", "cannot decode audio")


def test_pure_silence_is_skipped(folder: Path, emobase: OpenSmileExtractor) -> None:
    sf.write(folder / "audio/silence.wav", np.zeros(16_000, np.float32), 16_000)
    _add(folder, "audio/silence.wav")
    _assert_skipped_with_reason(_run(folder, emobase), "audio/silence.wav", "silent")


def test_clip_shorter_than_100_ms_is_skipped(folder: Path, emobase: OpenSmileExtractor) -> None:
    sf.write(folder / "audio/blip.wav", synth_clip(1, np.random.default_rng(0), seconds=0.05), 16_000)
    _add(folder, "audio/blip.wav")
    _assert_skipped_with_reason(_run(folder, emobase), "audio/blip.wav", "shorter than 100 ms")


def test_nan_filled_float_wav_is_skipped(folder: Path, emobase: OpenSmileExtractor) -> None:
    sf.write(folder / "audio/nan.wav", np.full(8_000, np.nan, np.float32), 16_000, subtype="FLOAT")
    _add(folder, "audio/nan.wav")
    _assert_skipped_with_reason(_run(folder, emobase), "audio/nan.wav", "NaN")


def test_six_channel_48k_file_is_extracted_like_its_mono_16k_version(folder: Path, emobase: OpenSmileExtractor) -> None:
    rng = np.random.default_rng(3)
    mono48 = synth_clip(2, rng, rate=48_000, seconds=1.0)
    sf.write(folder / "audio/six.wav", np.repeat(mono48[:, None], 6, axis=1), 48_000, subtype="FLOAT")
    _add(folder, "audio/six.wav", "sad")
    table = _run(folder, emobase)
    assert not table.failed and table.features.shape == (9, 988)
    six = table.features[table.paths.index("audio/six.wav")]
    from fedser_client.data.audio import load_audio

    sf.write(folder / "mono.wav", mono48, 48_000, subtype="FLOAT")
    np.testing.assert_allclose(six, emobase.extract(load_audio(folder / "mono.wav")), rtol=1e-3, atol=1e-3)


def test_non_audio_file_with_audio_extension_is_skipped(folder: Path, emobase: OpenSmileExtractor) -> None:
    (folder / "audio/notes.wav").write_text("shopping list: milk, eggs\n" * 50)
    _add(folder, "audio/notes.wav")
    _assert_skipped_with_reason(_run(folder, emobase), "audio/notes.wav", "cannot decode audio")


def test_labels_row_pointing_to_a_missing_file_does_not_stop_extraction(folder: Path, emobase: OpenSmileExtractor) -> None:
    _add(folder, "audio/gone.wav")
    listing = scan_data_dir(folder, LabelsConfig())
    table = _run(folder, emobase)
    assert listing.missing_files == ["audio/gone.wav"]
    assert len(table.paths) == 8 and not table.failed


def test_unknown_emotion_is_ignored_and_the_rest_extracted(folder: Path, emobase: OpenSmileExtractor) -> None:
    shutil.copy(folder / "audio/sad_0.wav", folder / "audio/odd.wav")
    _add(folder, "audio/odd.wav", "contempt")
    listing = scan_data_dir(folder, LabelsConfig())
    table = _run(folder, emobase)
    assert listing.ignored_emotions == {"contempt": 1}
    assert "audio/odd.wav" not in table.paths and len(table.paths) == 8


def test_data_dir_with_no_usable_audio_is_a_data_error(tmp_path: Path, emobase: OpenSmileExtractor) -> None:
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "b.ogg").write_text("text")
    with pytest.raises(DataError, match="none of the 2 audio files"):
        _run(tmp_path, emobase)


# -- the cache ---------------------------------------------------------------------------------

def test_second_run_extracts_nothing_and_gives_the_same_vectors(folder: Path, emobase: OpenSmileExtractor) -> None:
    first = _run(folder, counting := CountingExtractor(emobase))
    assert counting.calls == 8 and first.extracted == 8 and first.from_cache == 0
    second = _run(folder, counting := CountingExtractor(emobase))
    assert counting.calls == 0 and second.from_cache == 8
    np.testing.assert_array_equal(first.features, second.features)
    assert second.paths == first.paths and (second.labels == first.labels).all()


def test_changed_file_is_extracted_again(folder: Path, emobase: OpenSmileExtractor) -> None:
    before = _run(folder, emobase)
    sf.write(folder / "audio/happy_1.wav", synth_clip(3, np.random.default_rng(9)), 16_000)
    after = _run(folder, counting := CountingExtractor(emobase))
    assert counting.calls == 1 and after.from_cache == 7
    changed = after.paths.index("audio/happy_1.wav")
    assert not np.allclose(after.features[changed], before.features[changed])


def test_renamed_or_duplicated_file_is_found_by_content(folder: Path, emobase: OpenSmileExtractor) -> None:
    _run(folder, emobase)
    (folder / "audio/sad_0.wav").rename(folder / "audio/moved.wav")
    shutil.copy(folder / "audio/angry_0.wav", folder / "audio/copy.wav")
    table = _run(folder, counting := CountingExtractor(emobase))
    assert counting.calls == 0 and len(table.paths) == 9


def test_interrupted_run_resumes_where_it_stopped(folder: Path, emobase: OpenSmileExtractor) -> None:
    def stop_after_three(state: ExtractionProgress) -> None:
        if state.extracted == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(folder, emobase, progress=stop_after_three)
    resumed = _run(folder, counting := CountingExtractor(emobase))
    assert resumed.from_cache == 3 and counting.calls == 5 and len(resumed.paths) == 8


def test_worker_processes_give_the_same_vectors_as_one_process(folder: Path, emobase: OpenSmileExtractor) -> None:
    (folder / "audio/bad.wav").write_text("not audio")
    _add(folder, "audio/bad.wav")
    seen: list[int] = []
    pooled = _run(folder, emobase, workers=2, progress=lambda s: seen.append(s.done))
    shutil.rmtree(folder / ".fedser")
    single = _run(folder, emobase)
    assert pooled.paths == single.paths and pooled.extracted == 8
    np.testing.assert_allclose(pooled.features, single.features, rtol=1e-6)
    assert "cannot decode audio" in pooled.failed["audio/bad.wav"]
    assert seen[-1] == 9


def test_a_warm_run_builds_no_extractor(folder: Path, emobase: OpenSmileExtractor, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(folder, emobase)
    monkeypatch.setattr(ExtractorSpec, "build", lambda self: pytest.fail("a warm run loaded the extractor"))
    table = extract_features(folder, scan_data_dir(folder, LabelsConfig()), SPEC, folder / ".fedser" / "features")
    assert table.from_cache == 8 and table.extracted == 0
