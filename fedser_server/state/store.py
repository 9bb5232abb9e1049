"""The server state dir: `global.safetensors` (weights + control variate, written atomically),
`progress.json` (last completed round), `metrics.jsonl` (one line per round) and `address`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save

from fedser_shared.errors import StateError
from fedser_shared.fsutil import append_line, atomic_write_bytes, atomic_write_text


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise StateError(f"state dir {self.dir} is not writable: {exc.strerror or exc}") from None

    @property
    def global_path(self) -> Path:
        return self.dir / "global.safetensors"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def registry_path(self) -> Path:
        return self.dir / "registry.sqlite"

    def save_global(self, state: Mapping[str, np.ndarray], round_index: int) -> None:
        data = save({k: np.ascontiguousarray(v) for k, v in state.items()}, metadata={"round": str(round_index)})
        atomic_write_bytes(self.global_path, data)
        atomic_write_text(self.dir / "progress.json", json.dumps({"completed_round": round_index}))

    def load_global(self) -> tuple[dict[str, np.ndarray], int] | None:
        if not self.global_path.exists():
            return None
        try:
            state = load_file(str(self.global_path))
            progress = json.loads((self.dir / "progress.json").read_text())
            return dict(state), int(progress["completed_round"])
        except (OSError, ValueError, KeyError) as exc:
            raise StateError(f"cannot read saved state in {self.dir}: {exc}") from None

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        append_line(self.metrics_path, json.dumps(record, sort_keys=False, allow_nan=False, default=_json_default))

    def write_address(self, address: str) -> None:
        atomic_write_text(self.dir / "address", address + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
