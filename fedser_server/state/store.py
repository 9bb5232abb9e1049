"""The server state dir: `global.safetensors` (weights + control variate + the round they
complete, one atomic write), `progress.json` (a readable copy of that round),
`metrics.jsonl` (one line per round), `run_config.json` and `address`.

The round number lives inside the checkpoint's own metadata so that weights and round can
never disagree after a crash: a round is either in the checkpoint or it is run again.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedser_server.state import layout
from fedser_server.state.file_state import BlobFile
from fedser_shared.errors import CorruptStateError, StateError
from fedser_shared.fsutil import append_line, atomic_write_bytes, atomic_write_text
from fedser_shared.logging import get_logger
from fedser_shared.sealed import SealWriter, read_sealed, seal

log = get_logger(__name__)

# headroom a run needs on the state dir's disk beyond a few checkpoints (registry, metrics)
MIN_FREE_BYTES = 16 * 1024 * 1024


def read_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], int, dict[str, Any] | None] | None:
    """(state, completed round, that round's training record) from a checkpoint, or None without one.
    Tensors and metadata come from one read, so a checkpoint replaced meanwhile (by rename) cannot
    pair one round's weights with another round's number; its digest and finiteness are checked
    (`sealed`). Reads only: safe while a server runs."""
    try:
        sealed = read_sealed(path, "checkpoint")
    except FileNotFoundError:
        return None
    except CorruptStateError as exc:
        raise CorruptStateError(f"{exc}; it was left as it is: restore it from a backup, or start a new run "
                                "in an empty state dir") from None
    if not sealed.digest_checked:
        log.warning("checkpoint_without_digest", path=str(path))
    try:
        record = json.loads(sealed.metadata["train_record"]) if "train_record" in sealed.metadata else None
        return sealed.tensors, int(sealed.metadata["round"]), record
    except (ValueError, KeyError) as exc:
        raise CorruptStateError(f"the checkpoint {path} is corrupt: its round metadata cannot be read ({exc!r})") from None


class StateStore:
    def __init__(self, state_dir: Path, checkpoint_bytes: int = 0) -> None:
        self.dir = Path(state_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-probe"
            with open(probe, "wb") as handle:
                handle.write(b"ok")
                handle.flush()
                os.fsync(handle.fileno())
            probe.unlink()
        except OSError as exc:
            raise StateError(f"state dir {self.dir} is not writable: {exc.strerror or exc}") from None
        self.check_free_space(checkpoint_bytes)

    def check_free_space(self, checkpoint_bytes: int, scratch_bytes: int = 0) -> None:
        """Refuse to start a run that could not write its checkpoints (old + new + temp file) and
        its scratch files."""
        needed = 3 * checkpoint_bytes + scratch_bytes + MIN_FREE_BYTES
        free = shutil.disk_usage(self.dir).free
        if free < needed:
            raise StateError(f"state dir {self.dir} has {free / 2**20:.1f} MiB free; a run needs at least "
                             f"{needed / 2**20:.1f} MiB for its checkpoints")

    @property
    def global_path(self) -> Path:
        return self.dir / layout.GLOBAL_FILE

    @property
    def incoming_dir(self) -> Path:
        """Where updates being received are parked (unnamed files: nothing to clean up)."""
        return self.dir / layout.INCOMING_DIR

    @property
    def scratch_dir(self) -> Path:
        """Where a large model's served state and running sums live (unnamed files: nothing to clean up)."""
        return self.dir / layout.SCRATCH_DIR

    @property
    def metrics_path(self) -> Path:
        return self.dir / layout.METRICS_FILE

    @property
    def registry_path(self) -> Path:
        return self.dir / layout.REGISTRY_FILE

    @property
    def config_path(self) -> Path:
        return self.dir / layout.CONFIG_FILE

    def save_global(self, state: Mapping[str, np.ndarray], round_index: int, train_record: Mapping[str, Any] | None = None) -> None:
        # written from the state's own memory: safetensors' save made two full copies first
        self._save_checkpoint(seal(state, _checkpoint_metadata(round_index, train_record)), round_index)

    def save_global_from(self, blob: BlobFile, round_index: int, train_record: Mapping[str, Any] | None = None) -> None:
        """The checkpoint of a state held in a `BlobFile`, its bytes read through the file once (not
        mapped in): each block is hashed as it is written, and the header, which carries the digest,
        is written over its placeholder at the end. The checkpoint's tensors come in the blob's own order."""
        sealing = SealWriter(blob.tensors, _checkpoint_metadata(round_index, train_record))

        def parts() -> Iterator[bytes | memoryview]:
            yield sealing.placeholder
            for block in blob.data_blocks():  # a reused buffer: hashed and written before the next read
                sealing.update(block)
                yield block

        self._save_checkpoint(parts(), round_index, head=sealing.header)

    def _save_checkpoint(self, parts: Iterable[bytes | memoryview], round_index: int,
                         head: Callable[[], bytes] | None = None) -> None:
        atomic_write_bytes(self.global_path, parts, head)
        atomic_write_text(self.dir / "progress.json", json.dumps({"completed_round": round_index}))

    def has_checkpoint(self) -> bool:
        return self.global_path.exists()

    def load_global(self) -> tuple[dict[str, np.ndarray], int] | None:
        checkpoint = self.load_checkpoint()
        return None if checkpoint is None else (checkpoint[0], checkpoint[1])

    def load_checkpoint(self) -> tuple[dict[str, np.ndarray], int, dict[str, Any] | None] | None:
        """(state, completed round, that round's training record) or None without a checkpoint."""
        return read_checkpoint(self.global_path)

    def save_config(self, config_json: str) -> None:
        atomic_write_text(self.config_path, config_json)

    @staticmethod
    def saved_config_json(state_dir: Path) -> str | None:
        """The configuration a run saved when it started, read before the store is opened."""
        path = Path(state_dir) / layout.CONFIG_FILE
        try:
            return path.read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        append_line(self.metrics_path, json.dumps(record, sort_keys=False, allow_nan=False, default=_json_default))

    def reconcile_metrics(self, completed_round: int, train_record: Mapping[str, Any] | None) -> None:
        """After a crash: keep exactly one line per completed round, none for rounds to be run again."""
        kept: dict[int, dict[str, Any]] = {}
        for record in self.read_metrics():
            if record["round"] <= completed_round:
                kept.setdefault(record["round"], record)
        if completed_round not in kept and train_record is not None:
            kept[completed_round] = {**train_record, "resumed": True}
        atomic_write_text(self.metrics_path, "".join(
            json.dumps(kept[r], allow_nan=False, default=_json_default) + "\n" for r in sorted(kept)))

    def save_privacy_plan(self, plan_json: str) -> None:
        atomic_write_text(self.dir / layout.PRIVACY_PLAN_FILE, plan_json)

    def load_privacy_plan(self) -> str | None:
        try:
            return (self.dir / layout.PRIVACY_PLAN_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {self.dir / layout.PRIVACY_PLAN_FILE}: {exc.strerror}") from None

    def write_stop_reason(self, reason: str | None) -> None:
        """Why the run ended before its last round (one line); None: it has not (a resumed run)."""
        path = self.dir / layout.STOPPED_FILE
        if reason is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write_text(path, reason + "\n")

    def write_address(self, address: str) -> None:
        atomic_write_text(self.dir / layout.ADDRESS_FILE, address + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        return layout.read_metrics(self.metrics_path)


def _checkpoint_metadata(round_index: int, train_record: Mapping[str, Any] | None) -> dict[str, str]:
    metadata = {"round": str(round_index)}
    if train_record is not None:
        metadata["train_record"] = json.dumps(train_record, allow_nan=False, default=_json_default)
    return metadata


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
