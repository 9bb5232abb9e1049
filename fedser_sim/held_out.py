"""Speakers who never join the federation, scored with the global model (DESIGN §5, §6).

Each held-out speaker is z-scored with its own statistics (as `client` normalisation does for a
device), then the speakers are pooled and scored by UAR. The scorer reads the server's checkpoint, so
it works the same for every engine: it follows `global.safetensors` as evaluated rounds appear in
`metrics.jsonl`, and scores a round when the checkpoint still holds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedser_client.core.data import ClientData, zscore
from fedser_shared.config import RunConfig
from fedser_shared.metrics import uar


def choose_test_speakers(speakers: list[str], k: int, seed: int) -> list[str]:
    """K speakers drawn with the run's seed from the sorted speaker list."""
    ordered = sorted(speakers)
    picked = np.random.default_rng([seed, 0x7E57]).choice(len(ordered), size=k, replace=False)
    return sorted(ordered[i] for i in picked)


def held_out_set(vectors_by_speaker: dict[str, tuple[np.ndarray, np.ndarray]], config: RunConfig) -> ClientData:
    """The held-out speakers pooled, each normalised by its own statistics (or not at all, as configured)."""
    def normalised(x: np.ndarray) -> np.ndarray:
        return zscore(x) if config.features.normalisation == "client" else x.astype(np.float32)

    x = np.concatenate([normalised(x) for x, _ in vectors_by_speaker.values()])
    y = np.concatenate([y for _, y in vectors_by_speaker.values()])
    return ClientData(np.zeros((0, x.shape[1]), np.float32), np.zeros(0, np.int64), x, y)


@dataclass
class HeldOutScorer:
    config: RunConfig
    data: ClientData
    state_dir: Path
    scores: dict[int, float] = field(default_factory=dict)
    _trainer: object = None

    def _evaluate(self, state: dict[str, np.ndarray]) -> float:
        from fedser_client.core.trainer import LocalTrainer

        if self._trainer is None:
            self._trainer = LocalTrainer(self.config, self.data, 0)
        return float(uar(self._trainer.evaluate(state)[0]))  # type: ignore[attr-defined]

    def _checkpoint(self) -> tuple[dict[str, np.ndarray], int] | None:
        """The server's checkpoint and its round, or None while there is none or it cannot be read yet."""
        from fedser_server.state.layout import GLOBAL_FILE
        from fedser_server.state.store import read_checkpoint
        from fedser_shared.errors import StateError

        try:
            loaded = read_checkpoint(self.state_dir / GLOBAL_FILE)
        except StateError:  # a checkpoint being replaced: the next poll tries again
            return None
        return None if loaded is None else (loaded[0], loaded[1])

    def follow(self, metrics: list[dict[str, Any]]) -> None:
        """Score the newest evaluated round if the checkpoint still holds it."""
        evaluated = [m["round"] for m in metrics if m.get("uar") is not None]
        if not evaluated or evaluated[-1] in self.scores:
            return
        loaded = self._checkpoint()
        if loaded is not None and loaded[1] == evaluated[-1]:
            self.scores[evaluated[-1]] = self._evaluate(loaded[0])

    def final(self) -> tuple[int, float] | None:
        """The final global model's score (read after the run, so always the last round)."""
        loaded = self._checkpoint()
        if loaded is None:
            return None
        if loaded[1] not in self.scores:
            self.scores[loaded[1]] = self._evaluate(loaded[0])
        return loaded[1], self.scores[loaded[1]]
