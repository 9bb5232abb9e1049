"""What a client keeps in `<data dir>/.fedser/`: its id, and its local state: control variate
c_i, pseudo-label pool (by file path) and participation count. Every write is atomic; the
local state is one file, so c_i and the count that goes with it never disagree after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save

from fedser_client.core.state import LocalState
from fedser_shared.errors import StateError
from fedser_shared.fsutil import atomic_write_bytes, atomic_write_text

STATE_FILE = "local_state.safetensors"  # c_i tensors; participations and pool in its metadata
# what versions before the single file wrote, as two atomic writes; read when STATE_FILE is absent
LEGACY_CONTROL, LEGACY_META = "control.safetensors", "local_state.json"


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

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    def client_id(self, server_key: str) -> str:
        path = self.dir / "client.json"
        if not path.exists():
            return ""
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return ""
        return record.get("client_id", "") if record.get("server") == server_key else ""

    def forget_training_state(self) -> None:
        """Drop c_i, the pseudo-label pool, the participation count and the client id, keeping the
        feature cache: for a simulation, whose every run starts a new federation."""
        for name in (STATE_FILE, LEGACY_CONTROL, LEGACY_META, "client.json"):
            (self.dir / name).unlink(missing_ok=True)

    def save_client_id(self, server_key: str, client_id: str) -> None:
        atomic_write_text(self.dir / "client.json", json.dumps({"server": server_key, "client_id": client_id}))

    def load_state(self, train_paths: list[str]) -> LocalState:
        control, meta = self._read_state() if self.state_path.exists() else self._read_legacy()
        participations, pool = int(meta.get("participations", 0)), dict(meta.get("pseudo_labels", {}))
        row_of = {p: i for i, p in enumerate(train_paths)}
        kept = [(row_of[p], int(label)) for p, label in pool.items() if p in row_of]
        index = np.array([r for r, _ in kept], np.int64)
        labels = np.array([lab for _, lab in kept], np.int64)
        return LocalState(control=control, pseudo_index=index, pseudo_label=labels, participations=participations)

    def save_state(self, state: LocalState, train_paths: list[str]) -> None:
        pool = {train_paths[int(i)]: int(label) for i, label in zip(state.pseudo_index, state.pseudo_label)}
        meta = json.dumps({"participations": state.participations, "pseudo_labels": pool})
        control = {k: np.ascontiguousarray(v) for k, v in state.control.items()}
        atomic_write_bytes(self.state_path, save(control, metadata={"meta": meta}))
        for name in (LEGACY_CONTROL, LEGACY_META):
            (self.dir / name).unlink(missing_ok=True)

    def _read_state(self) -> tuple[dict[str, np.ndarray], dict]:
        try:
            with safe_open(str(self.state_path), framework="numpy") as handle:
                meta = json.loads((handle.metadata() or {})["meta"])
                names = handle.keys()  # a safetensors file handle, not a dict
                control = {name: handle.get_tensor(name) for name in names}
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            raise StateError(f"cannot read {self.state_path}: {exc}") from None
        return control, meta

    def _read_legacy(self) -> tuple[dict[str, np.ndarray], dict]:
        control: dict[str, np.ndarray] = {}
        meta: dict = {}
        try:
            if (self.dir / LEGACY_CONTROL).exists():
                control = dict(load_file(str(self.dir / LEGACY_CONTROL)))
            if (self.dir / LEGACY_META).exists():
                meta = json.loads((self.dir / LEGACY_META).read_text())
        except (OSError, ValueError, SafetensorError) as exc:
            raise StateError(f"cannot read the local state in {self.dir}: {exc}") from None
        return control, meta
