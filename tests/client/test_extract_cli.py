"""`fedser-client extract`: progress, a closing summary, a warm second run, one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import make_client_dir


def _extract(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedser_client.cli", "extract", *args],
                          capture_output=True, text=True, timeout=240, env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"})


def _row(output: str, name: str) -> list[str]:
    line = next(line for line in output.splitlines() if re.search(rf"│ {name}\s", line))
    return [cell.strip() for cell in line.strip("│ ").split("│")]


def test_extract_shows_the_summary_and_a_warm_rerun_uses_the_cache(tmp_path: Path) -> None:
    folder = make_client_dir(tmp_path, "c", per_class=2, unlabeled=1)
    (folder / "audio" / "broken.wav").write_text("not audio")
    with open(folder / "labels.csv", "a") as handle:
        handle.write("audio/missing.wav,sad\n")

    first = _extract("--data-dir", str(folder), "--feature", "emobase", "--workers", "1")
    assert first.returncode == 0, first.stderr
    out = first.stderr + first.stdout
    assert "emobase features" in out and "9/9" in out  # the progress bar: files done of found
    assert _row(out, "labeled happy")[1:] == ["1", "1"]
    assert _row(out, "unlabeled")[1:] == ["5", "4"]  # 4 unlabeled clips + the broken file
    assert _row(out, "extracted now")[-1] == "8"
    assert _row(out, "skipped")[-1] == "1"
    assert "cannot decode audio" in out and "audio/broken.wav" in out
    assert _row(out, "labels.csv rows without a file")[1] == "1"

    second = _extract("--data-dir", str(folder), "--workers", "1")
    assert second.returncode == 0, second.stderr
    out = second.stderr + second.stdout
    assert _row(out, "from cache")[-1] == "8" and _row(out, "extracted now")[-1] == "0"


def test_extract_on_a_dir_without_audio_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing to hear")
    result = _extract("--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"fedser-client: error: no audio files (.aif, .aiff, .au, .flac, .oga, .ogg, .opus, .wav) found under {tmp_path}"]


def test_extract_with_an_unknown_feature_names_the_field(tmp_path: Path) -> None:
    folder = make_client_dir(tmp_path, "c", per_class=1)
    result = _extract("--data-dir", str(folder), "--feature", "mfcc")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "features.name" in result.stderr and len(result.stderr.strip().splitlines()) == 1
