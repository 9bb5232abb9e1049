"""Scanning a data dir: labels.csv or manifest.csv, unknown emotions and missing files counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedser_client.data.labels import scan_data_dir
from fedser_shared.config import LabelsConfig
from fedser_shared.errors import DataError
from tests.conftest import make_client_dir


def test_labels_csv_maps_emotions_and_keeps_unlabeled_files(tmp_path: Path) -> None:
    folder = make_client_dir(tmp_path, "c", per_class=2, unlabeled=1)
    listing = scan_data_dir(folder, LabelsConfig())
    assert len(listing.files) == 8
    assert sorted(f.label for f in listing.files if f.label is not None) == [0, 1, 2, 3]
    assert sum(f.label is None for f in listing.files) == 4


def test_manifest_csv_with_corpus_spellings_is_accepted(tmp_path: Path) -> None:
    folder = make_client_dir(tmp_path, "c", per_class=1)
    (folder / "labels.csv").unlink()
    (folder / "manifest.csv").write_text(
        "path,speaker,emotion,gender\n"
        "audio/neutral_0.wav,S1,neutral,f\naudio/happy_0.wav,S1,happiness,f\n"
        "audio/sad_0.wav,S1,sadness,f\naudio/angry_0.wav,S1,anger,f\n")
    listing = scan_data_dir(folder, LabelsConfig())
    assert {f.path.name: f.label for f in listing.files} == {
        "neutral_0.wav": 0, "happy_0.wav": 1, "sad_0.wav": 2, "angry_0.wav": 3}


def test_unknown_emotion_is_left_out_and_counted(tmp_path: Path) -> None:
    folder = make_client_dir(tmp_path, "c", per_class=1)
    with open(folder / "labels.csv", "a") as handle:
        handle.write("audio/extra.wav,surprise\n")
    (folder / "audio" / "extra.wav").write_bytes((folder / "audio" / "sad_0.wav").read_bytes())
    listing = scan_data_dir(folder, LabelsConfig())
    assert listing.ignored_emotions == {"surprise": 1}
    assert "extra.wav" not in {f.path.name for f in listing.files}


def test_labels_row_for_a_missing_file_is_counted_not_fatal(tmp_path: Path) -> None:
    folder = make_client_dir(tmp_path, "c", per_class=1)
    with open(folder / "labels.csv", "a") as handle:
        handle.write("audio/gone.wav,happy\n")
    listing = scan_data_dir(folder, LabelsConfig())
    assert listing.missing_files == ["audio/gone.wav"]
    assert len(listing.files) == 4


def test_data_dir_without_audio_is_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no audio here")
    with pytest.raises(DataError, match="no audio files"):
        scan_data_dir(tmp_path, LabelsConfig())


def test_path_escaping_the_data_dir_is_refused(tmp_path: Path) -> None:
    folder = make_client_dir(tmp_path, "c", per_class=1)
    (folder / "labels.csv").write_text("path,emotion\n../secret.wav,happy\n")
    with pytest.raises(DataError, match="relative to the data dir"):
        scan_data_dir(folder, LabelsConfig())
