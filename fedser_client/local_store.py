"""What a client keeps in `<data dir>/.fedser/`: its id, and its local state: control variate
c_i, pseudo-label pool (by file path) and participation count. Every write is atomic; the
local state is one file, so c_i and the count that goes with it never disagree after a crash.

The local state file carries its own digest (`fedser_shared.sealed`). A state file that fails its
check (a flipped bit, a NaN, a torn or truncated file) is set aside as `<name>.corrupt` with a
warning that names it, and the client goes on as a newly joined one would: c_i at zero, an empty
pool. An unattended device keeps contributing, and SCAFFOLD tolerates a c_i restarted at zero
(docs/operations.md); a corrupt c_i used as is would get every update of this client refused.

The store remembers what the file holds as it last read or wrote it, with the file's identity then
(inode, size, modification and change times): a load while the file is still that one reads and
checks nothing, and a save of the state the file already holds writes nothing. Anything else (the
first load, a file replaced or edited by anyone else) is read from disk and checked as above.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedser_client.core.state import LocalState
from fedser_shared.errors import CorruptStateError, StateError
from fedser_shared.fsutil import atomic_write_bytes, atomic_write_text
from fedser_shared.logging import get_logger
from fedser_shared.sealed import read_sealed, seal

log = get_logger(__name__)

STATE_FILE = "local_state.safetensors"  # c_i tensors; participations and pool in its metadata
# what versions before the single file wrote, as two atomic writes; read when STATE_FILE is absent
LEGACY_CONTROL, LEGACY_META = "control.safetensors", "local_state.json"
CORRUPT_SUFFIX = ".corrupt"


FileStamp = tuple[int, int, int, int]  # inode, size, mtime_ns, ctime_ns: a replaced or edited file has another


@dataclass(frozen=True, slots=True)
class _Known:
    """The state file's contents as this store last read (and checked) or wrote them."""

    stamp: FileStamp
    control: dict[str, np.ndarray]  # read-only: handed out on later loads
    participations: int
    pool: dict[str, int]


def _stamp(path: Path) -> FileStamp | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _frozen(control: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """c_i as the store keeps it: arrays nobody can change behind its back (a write raises)."""
    frozen = {}
    for name, value in control.items():
        value = np.ascontiguousarray(value)
        value.flags.writeable = False
        frozen[name] = value
    return frozen


def _same_control(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k] is b[k] or (a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])) for k in a)


class LocalStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / ".fedser"
        self.state_path = self.dir / STATE_FILE
        self._known: _Known | None = None
        self._legacy_checked = False  # the two-file layout's files are removed at the first save
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

    def forget_training_state(self) -> None:
        """Drop c_i, the pseudo-label pool, the participation count and the client id, keeping the
        feature cache: for a simulation, whose every run starts a new federation."""
        for name in (STATE_FILE, LEGACY_CONTROL, LEGACY_META, "client.json"):
            (self.dir / name).unlink(missing_ok=True)
        self._known = None

    def save_client_id(self, server_key: str, client_id: str) -> None:
        atomic_write_text(self.dir / "client.json", json.dumps({"server": server_key, "client_id": client_id}))

    def load_state(self, train_paths: list[str]) -> LocalState:
        """c_i (read-only arrays), the pool restricted to `train_paths` and the participation count."""
        stamp = _stamp(self.state_path)
        known = self._known
        if known is None or stamp is None or stamp != known.stamp:
            known = self._read(stamp)
        row_of = {p: i for i, p in enumerate(train_paths)}
        kept_rows = [(row_of[p], label) for p, label in known.pool.items() if p in row_of]
        index = np.array([r for r, _ in kept_rows], np.int64)
        labels = np.array([lab for _, lab in kept_rows], np.int64)
        return LocalState(control=dict(known.control), pseudo_index=index, pseudo_label=labels,
                          participations=known.participations)

    def save_state(self, state: LocalState, train_paths: list[str]) -> None:
        """Written atomically, unless the file still holds exactly this state (then nothing is written)."""
        pool = {train_paths[int(i)]: int(label) for i, label in zip(state.pseudo_index, state.pseudo_label)}
        known = self._known
        if (known is not None and known.participations == state.participations and known.pool == pool
                and _same_control(known.control, state.control) and _stamp(self.state_path) == known.stamp):
            return
        control = _frozen(state.control)
        meta = json.dumps({"participations": state.participations, "pseudo_labels": pool})
        self._known = None  # until the new file is in place
        atomic_write_bytes(self.state_path, seal(control, {"meta": meta}))
        stamp = _stamp(self.state_path)
        if stamp is not None:
            self._known = _Known(stamp, control, state.participations, pool)
        if not self._legacy_checked:
            for name in (LEGACY_CONTROL, LEGACY_META):
                (self.dir / name).unlink(missing_ok=True)
            self._legacy_checked = True

    def _read(self, stamp: FileStamp | None) -> _Known:
        """The state from disk, checked; remembered when the file did not change while it was read.
        A corrupt file is set aside (named in a warning) and the state restarts at zero."""
        self._known = None
        try:
            control, meta = self._read_state() if stamp is not None else self._read_legacy()
        except CorruptStateError as exc:
            kept = self._set_aside()
            log.warning("local_state_corrupt_restarting_at_zero", problem=str(exc), kept_as=[str(p) for p in kept],
                        action="c_i restarts at zero and the pseudo-label pool empty; delete the .corrupt files once seen")
            control, meta = {}, {}
        known = _Known(stamp or (0, 0, 0, 0), _frozen(control), int(meta.get("participations", 0)),
                       {str(p): int(label) for p, label in meta.get("pseudo_labels", {}).items()})
        if stamp is not None and _stamp(self.state_path) == stamp:
            self._known = known
        return known

    def _read_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        sealed = read_sealed(self.state_path, "local state")
        return sealed.tensors, _checked_meta(sealed.metadata.get("meta"), self.state_path)

    def _read_legacy(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        control: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {}
        if (self.dir / LEGACY_CONTROL).exists():
            control = read_sealed(self.dir / LEGACY_CONTROL, "local state").tensors
        if (self.dir / LEGACY_META).exists():
            try:
                text = (self.dir / LEGACY_META).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise CorruptStateError(f"the local state {self.dir / LEGACY_META} cannot be read: {exc}") from None
            meta = _checked_meta(text, self.dir / LEGACY_META)
        return control, meta

    def _set_aside(self) -> list[Path]:
        """Rename the state files to `<name>.corrupt` (replacing an older one): kept for a look, never read."""
        kept = []
        for name in (STATE_FILE, LEGACY_CONTROL, LEGACY_META):
            path = self.dir / name
            if path.exists():
                target = path.with_name(name + CORRUPT_SUFFIX)
                try:
                    path.replace(target)
                except OSError as exc:
                    raise StateError(f"the local state {path} is corrupt and cannot be set aside: {exc.strerror}; "
                                     "delete it to restart c_i at zero") from None
                kept.append(target)
        return kept


def _checked_meta(text: str | None, path: Path) -> dict[str, Any]:
    """Participations and pool from the state's JSON, refused unless well-formed."""
    try:
        meta = json.loads(text) if text is not None else None
    except ValueError:
        meta = None
    pool = meta.get("pseudo_labels", {}) if isinstance(meta, dict) else None
    if (not isinstance(meta, dict) or type(meta.get("participations", 0)) is not int or not isinstance(pool, dict)
            or not all(isinstance(k, str) and type(v) is int for k, v in pool.items())):
        raise CorruptStateError(f"the local state {path} is corrupt: its participation count or pseudo-label pool is malformed")
    return meta
