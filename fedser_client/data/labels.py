"""Which file is what: `labels.csv` (path,emotion) or a corpus `manifest.csv` (path,speaker,emotion,...).

Paths are relative to the data dir. A file with no row, or an empty emotion, is unlabeled.
Emotions the label map does not know are ignored and counted. A simulation (`fedser-sim
--label-rate`) writes the emotion it hid in a `hidden_emotion` column: never trained on, only used
to count how many pseudo-labels were right.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fedser_shared.config import LabelsConfig
from fedser_shared.errors import DataError

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au"})
LABEL_FILES = ("labels.csv", "manifest.csv")


@dataclass(frozen=True)
class LabeledFile:
    path: Path           # relative to the data dir
    label: int | None    # class id, None when unlabeled
    hidden: int | None = None  # a simulation's hidden true class of an unlabeled file


@dataclass
class DataListing:
    files: list[LabeledFile]
    ignored_emotions: Counter[str] = field(default_factory=Counter)
    missing_files: list[str] = field(default_factory=list)
    label_file: Path | None = None

    @property
    def n_labeled(self) -> int:
        return sum(1 for f in self.files if f.label is not None)


def _read_label_rows(label_file: Path) -> list[dict[str, str]]:
    try:
        with open(label_file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                raise DataError(f"{label_file} is empty: expected a header 'path,emotion'")
            header = {name.strip().lower() for name in reader.fieldnames if name}
            if not {"path", "emotion"} <= header:
                raise DataError(f"{label_file} needs columns 'path' and 'emotion', found {sorted(header)}")
            return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError:
        raise DataError(f"{label_file} is not UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"{label_file} is not valid CSV: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read {label_file}: {exc.strerror}") from None


def scan_data_dir(data_dir: Path, labels: LabelsConfig) -> DataListing:
    """List the audio files of a data dir with their class ids (recursively)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data dir {data_dir} does not exist or is not a directory")
    try:
        audio = sorted(
            p.relative_to(data_dir) for p in data_dir.rglob("*")
            if p.suffix.lower() in AUDIO_SUFFIXES and ".fedser" not in p.parts and p.is_file()
        )
    except OSError as exc:
        raise DataError(f"cannot read data dir {data_dir}: {exc.strerror}") from None
    label_file = next((data_dir / name for name in LABEL_FILES if (data_dir / name).is_file()), None)
    rows = _read_label_rows(label_file) if label_file else []
    if label_file is not None and not rows:
        raise DataError(f"{label_file} has no rows: label at least one file or remove it")

    label_of: dict[Path, int | None] = {}
    hidden_of: dict[Path, int | None] = {}
    ignored: Counter[str] = Counter()
    missing: list[str] = []
    left_out: set[Path] = set()
    present = set(audio)
    for row in rows:
        rel = Path(row["path"])
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError(f"{label_file}: path '{row['path']}' must be relative to the data dir")
        if rel not in present:
            missing.append(row["path"])
            continue
        emotion = row.get("emotion", "")
        if not emotion:
            label_of[rel] = None
            hidden_of[rel] = labels.class_of(row.get("hidden_emotion", ""))
            continue
        cls = labels.class_of(emotion)
        if cls is None:  # an emotion outside the label map: the file is left out, and counted
            ignored[emotion.lower()] += 1
            left_out.add(rel)
            continue
        label_of[rel] = cls
    files = [LabeledFile(p, label_of.get(p), hidden_of.get(p)) for p in audio if p not in left_out]
    if not files:
        raise DataError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) found under {data_dir}")
    return DataListing(files=files, ignored_emotions=ignored, missing_files=missing, label_file=label_file)

