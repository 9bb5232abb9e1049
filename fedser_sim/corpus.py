"""Read a corpus `manifest.csv` (path, speaker, emotion, ...) and cut it into client data dirs."""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedser_shared.config import LabelsConfig
from fedser_shared.errors import DataError


@dataclass(frozen=True)
class Utterance:
    path: str      # relative to the corpus root
    speaker: str
    emotion: str
    label: int


def read_manifest(corpus: Path, labels: LabelsConfig) -> tuple[list[Utterance], dict[str, int]]:
    """Utterances whose emotion the label map knows, and a count of the emotions it does not."""
    manifest = Path(corpus) / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"corpus {corpus} has no manifest.csv (columns path,speaker,emotion)")
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"path", "speaker", "emotion"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{manifest} lacks columns {sorted(missing)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {manifest}: {exc}") from None
    utterances: list[Utterance] = []
    ignored: defaultdict[str, int] = defaultdict(int)
    for row in rows:
        label = labels.class_of(row["emotion"] or "")
        if label is None:
            ignored[row["emotion"]] += 1
            continue
        utterances.append(Utterance(row["path"], row["speaker"], row["emotion"], label))
    if not utterances:
        seen = ", ".join(f"{emotion or '(empty)'} {n}" for emotion, n in sorted(ignored.items())) or "none"
        raise DataError(f"{manifest} has no rows with an emotion the label map names (found: {seen}); "
                        f"map them with labels.emotion_map in --config")
    return utterances, dict(ignored)


def partition_by_speaker(utterances: list[Utterance], n_clients: int, seed: int = 0) -> list[list[Utterance]]:
    """Split speakers over clients; with more clients than speakers, split speakers into shards.

    Speakers are sorted, so the same corpus and arguments always give the same partition."""
    speakers = sorted({u.speaker for u in utterances})
    by_speaker = {s: [u for u in utterances if u.speaker == s] for s in speakers}
    if n_clients <= len(speakers):
        parts: list[list[Utterance]] = [[] for _ in range(n_clients)]
        for i, speaker in enumerate(speakers):
            parts[i % n_clients].extend(by_speaker[speaker])
        return parts
    shards_per_speaker = [n_clients // len(speakers) + (1 if i < n_clients % len(speakers) else 0) for i in range(len(speakers))]
    rng = np.random.default_rng(seed)
    parts = []
    for speaker, n_shards in zip(speakers, shards_per_speaker):
        shards: list[list[Utterance]] = [[] for _ in range(n_shards)]
        members = by_speaker[speaker]
        for label in sorted({u.label for u in members}):  # stratified: each shard gets every class
            same = [u for u in members if u.label == label]
            for j, k in enumerate(rng.permutation(len(same))):
                shards[j % n_shards].append(same[k])
        parts.extend(shards)
    return parts


def write_client_dir(corpus: Path, utterances: list[Utterance], folder: Path, hidden: set[str] | None = None) -> Path:
    """A client data dir: symlinks into the corpus (same relative layout) and labels.csv."""
    corpus = Path(corpus).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for u in utterances:
        link = folder / u.path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            if os.path.realpath(link) == str(corpus / u.path):
                continue
            link.unlink()
        link.symlink_to(corpus / u.path)
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "emotion", "hidden_emotion"] if hidden else ["path", "emotion"])
        for u in utterances:
            if not hidden:
                writer.writerow([u.path, u.emotion])
            else:  # hidden_emotion: only to count right pseudo-labels, never trained on
                writer.writerow([u.path, "", u.emotion] if u.path in hidden else [u.path, u.emotion, ""])
    return folder
