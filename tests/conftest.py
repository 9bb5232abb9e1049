"""Shared fixtures: small generated audio corpora (tones and noise written with soundfile)."""

from __future__ import annotations

import csv
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

EMOTIONS = ["neutral", "happy", "sad", "angry"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def synth_clip(emotion_index: int, rng: np.random.Generator, rate: int = 16_000, seconds: float = 0.5) -> np.ndarray:
    """A tone whose pitch and loudness depend on the class, plus noise: learnable, not trivial."""
    t = np.arange(int(rate * seconds)) / rate
    pitch = 140.0 * (1.6 ** emotion_index) * rng.uniform(0.9, 1.1)
    amplitude = 0.15 + 0.12 * emotion_index
    tone = amplitude * np.sin(2 * np.pi * pitch * t) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
    return (tone + rng.normal(0, 0.03, t.shape)).astype(np.float32)


def make_client_dir(root: Path, name: str, per_class: int = 6, seed: int = 0, missing_class: int | None = None,
                    rate: int = 16_000, unlabeled: int = 0, subtype: str = "PCM_16", suffix: str = ".wav") -> Path:
    rng = np.random.default_rng(seed)
    folder = root / name
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for cls, emotion in enumerate(EMOTIONS):
        if cls == missing_class:
            continue
        for i in range(per_class):
            rel = f"audio/{emotion}_{i}{suffix}"
            sf.write(folder / rel, synth_clip(cls, rng, rate), rate, subtype=subtype)
            rows.append((rel, emotion if i >= unlabeled else ""))
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "emotion"])
        writer.writerows(rows)
    return folder


@pytest.fixture
def client_dirs(tmp_path: Path) -> list[Path]:
    return [make_client_dir(tmp_path / "clients", f"client{i}", per_class=6, seed=i) for i in range(3)]
