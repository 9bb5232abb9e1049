"""What a server checks and tidies in its state dir before it uses it: leftovers of a write that a
kill interrupted, a registry that fails SQLite's integrity check or holds a malformed row, and a
history (metrics.jsonl) whose checkpoint is gone. Each problem is one `StateError` naming the file
and what to do; nothing is changed on disk except the removal of temp files no one will rename."""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from pathlib import Path

from fedser_server.state import layout
from fedser_shared.errors import CorruptStateError, StateError
from fedser_shared.logging import get_logger

log = get_logger(__name__)

# the files the server writes atomically (`fsutil.atomic_write_bytes`: `.NAME.<random>.tmp`, then a rename)
_ATOMIC_FILES = (layout.GLOBAL_FILE, layout.PROGRESS_FILE, layout.METRICS_FILE, layout.CONFIG_FILE, layout.ADDRESS_FILE,
                 layout.PRIVACY_PLAN_FILE, layout.STOPPED_FILE)
_INTEGRITY_LINES_SHOWN = 3


def prepare_state_dir(state_dir: Path) -> None:
    """Run before a server opens `state_dir` (fresh or resumed); a dir that does not exist yet passes."""
    if not state_dir.is_dir():
        return
    remove_interrupted_writes(state_dir)
    check_registry(state_dir / layout.REGISTRY_FILE)
    check_history_has_its_checkpoint(state_dir)


def remove_interrupted_writes(state_dir: Path) -> list[Path]:
    """Delete the temp files of atomic writes that a kill cut short (a checkpoint's is as large as
    the model): only a running server renames them, and none runs on this dir yet."""
    removed = []
    for name in _ATOMIC_FILES:
        for path in state_dir.glob(f".{name}.*.tmp"):
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StateError(f"cannot remove the interrupted write {path}: {exc.strerror or exc}") from None
            log.warning("interrupted_write_removed", path=str(path), bytes=size)
            removed.append(path)
    return removed


def check_registry(path: Path) -> None:
    """SQLite's own integrity check, then each row's fields: a registry that fails either is named,
    never half-loaded (a client whose row is damaged would be refused as someone else)."""
    if not path.exists():
        return
    hint = "restore it from a backup; or move it away, and every client joins again as a new client"
    try:
        with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
            problems = [row[0] for row in db.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                shown = "; ".join(problems[:_INTEGRITY_LINES_SHOWN])
                more = f" (+{len(problems) - _INTEGRITY_LINES_SHOWN} more)" if len(problems) > _INTEGRITY_LINES_SHOWN else ""
                raise CorruptStateError(f"the client registry {path} is corrupt: {shown}{more}; {hint}")
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            rows = list(db.execute("SELECT client_id, name, label_counts, n_unlabeled, n_eval, feature_name, feature_dim, "
                                   "joined_at, last_seen, participations, left FROM clients")) if "clients" in tables else []
    except sqlite3.Error as exc:
        raise CorruptStateError(f"the client registry {path} cannot be read: {exc}; {hint}") from None
    for row in rows:
        problem = _row_problem(row)
        if problem is not None:
            raise CorruptStateError(f"the client registry {path} is corrupt: the row of client {row[0]!r} {problem}; {hint}")


def _row_problem(row: tuple[object, ...]) -> str | None:
    client_id, name, label_counts, n_unlabeled, n_eval, feature_name, feature_dim, joined_at, last_seen, participations, left = row
    if not all(isinstance(v, str) and v for v in (client_id, name, feature_name)):
        return "has an empty or non-text id, name or feature name"
    try:
        counts = json.loads(label_counts) if isinstance(label_counts, str) else None
    except ValueError:
        counts = None
    if not isinstance(counts, list) or not all(type(c) is int and c >= 0 for c in counts):
        return f"has malformed label counts {label_counts!r}"
    if not all(type(v) is int and v >= 0 for v in (n_unlabeled, n_eval, feature_dim, participations)):
        return "has a negative or non-integer count"
    if left not in (0, 1):
        return f"has a malformed 'left' flag {left!r}"
    if not all(isinstance(t, (int, float)) and math.isfinite(t) for t in (joined_at, last_seen)):
        return "has a malformed time"
    return None


def check_history_has_its_checkpoint(state_dir: Path) -> None:
    """Rounds on record in metrics.jsonl were checkpointed before their line was written: without
    the checkpoint, a server would start again at round 1 and the history would read 1,2,3,1,2."""
    if (state_dir / layout.GLOBAL_FILE).exists():
        return
    rounds = [record["round"] for record in layout.read_metrics(state_dir / layout.METRICS_FILE)]
    if rounds:
        raise StateError(f"{state_dir / layout.GLOBAL_FILE} is missing, but {state_dir / layout.METRICS_FILE} records "
                         f"rounds {min(rounds)}-{max(rounds)} of a run: restore the checkpoint to continue that run, or "
                         "start a new run in an empty state dir (the old dir keeps its history)")
