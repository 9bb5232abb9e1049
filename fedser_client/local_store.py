"""What a client keeps in `<data dir>/.fedser/`: its id, its control variate c_i, its
pseudo-label pool (by file path) and participation count. Every write is atomic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from fedser_client.core.trainer import LocalState
from fedser_shared.errors import StateError
from fedser_shared.fsutil import atomic_write_bytes, atomic_write_text


class LocalStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / ".fedser"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create {self.dir}: {exc.strerror}") from None

    @property
    def feature_cache_dir(self) -> Path:
        return self.dir / "features"

    def client_id(self, server_key: str) -> str:
        path = self.dir / "client.json"
        if not path.exists():
            return ""
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return ""
        return record.get("client_id", "") if record.get("server") == server_key else ""

    def save_client_id(self, server_key: str, client_id: str) -> None:
        atomic_write_text(self.dir / "client.json", json.dumps({"server": server_key, "client_id": client_id}))

    def load_state(self, train_paths: list[str]) -> LocalState:
        control: dict[str, np.ndarray] = {}
        if (self.dir / "control.safetensors").exists():
            try:
                control = dict(load_file(str(self.dir / "control.safetensors")))
            except (OSError, ValueError) as exc:
                raise StateError(f"cannot read {self.dir / 'control.safetensors'}: {exc}") from None
        meta_path = self.dir / "local_state.json"
        participations, pool = 0, {}
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                participations, pool = int(meta.get("participations", 0)), dict(meta.get("pseudo_labels", {}))
            except (OSError, ValueError) as exc:
                raise StateError(f"cannot read {meta_path}: {exc}") from None
        row_of = {p: i for i, p in enumerate(train_paths)}
        kept = [(row_of[p], int(label)) for p, label in pool.items() if p in row_of]
        index = np.array([r for r, _ in kept], np.int64)
        labels = np.array([lab for _, lab in kept], np.int64)
        return LocalState(control=control, pseudo_index=index, pseudo_label=labels, participations=participations)

    def save_state(self, state: LocalState, train_paths: list[str]) -> None:
        if state.control:
            atomic_write_bytes(self.dir / "control.safetensors", save({k: np.ascontiguousarray(v) for k, v in state.control.items()}))
        pool = {train_paths[int(i)]: int(label) for i, label in zip(state.pseudo_index, state.pseudo_label)}
        atomic_write_text(self.dir / "local_state.json", json.dumps({"participations": state.participations, "pseudo_labels": pool}))
