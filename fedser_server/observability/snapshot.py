"""Read a server state dir without a running server: progress, metrics.jsonl, the client registry.

Opens nothing for writing, so it works on a live server's dir, a copied one, or the
`server/` dir that `fedser-sim` leaves behind.
"""

from __future__ import annotations

import json
import sqlite3
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedser_server.state.layout import (
    ADDRESS_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    PROGRESS_FILE,
    REGISTRY_FILE,
    SIM_CONFIG_FILE,
    read_metrics,
    read_stop_reason,
)
from fedser_shared.errors import StateError

__all__ = ["ADDRESS_FILE", "CONFIG_FILE", "METRICS_FILE", "PROGRESS_FILE", "REGISTRY_FILE", "SIM_CONFIG_FILE",
           "RunSnapshot", "load_snapshot", "read_clients", "read_metrics"]


@dataclass(frozen=True)
class ClientRow:
    client_id: str
    name: str
    joined_at: float
    last_seen: float
    participations: int
    left: bool
    n_labeled: int
    n_unlabeled: int
    n_eval: int


@dataclass(frozen=True)
class RunSnapshot:
    state_dir: Path
    completed_round: int
    records: list[dict[str, Any]]
    clients: list[ClientRow]
    address: str | None
    updated_at: float | None
    class_names: list[str] | None = None
    stop_reason: str | None = None  # why the run ended before its last round (a privacy budget)
    epsilon_budget: float | None = None  # privacy.epsilon_budget of the saved config

    @property
    def last(self) -> dict[str, Any] | None:
        return self.records[-1] if self.records else None

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("uar") is not None]

    @property
    def best(self) -> dict[str, Any] | None:
        return max(self.evaluations, key=lambda r: r["uar"], default=None)

    @property
    def semi(self) -> bool:
        return any("pseudo_taken" in r for r in self.records)


def read_clients(path: Path) -> list[ClientRow]:
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT client_id, name, joined_at, last_seen, participations, left, label_counts, "
                              "n_unlabeled, n_eval FROM clients ORDER BY name").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StateError(f"cannot read client registry {path}: {exc}") from None
    return [_client_row(path, r) for r in rows]


def _client_row(path: Path, r: tuple[Any, ...]) -> ClientRow:
    try:
        label_counts = json.loads(r[6])
        if not isinstance(label_counts, list):
            raise TypeError("label_counts is not a list")
        return ClientRow(str(r[0]), str(r[1]), float(r[2]), float(r[3]), int(r[4]), bool(r[5]),
                         sum(int(n) for n in label_counts), int(r[7]), int(r[8]))
    except (TypeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise StateError(f"client registry {path}: the row of client '{str(r[0])[:64]}' is malformed ({exc})") from None


def read_class_names(state_dir: Path) -> list[str] | None:
    """Class names (labels only, cosmetic) from the config the server saved, or from `fedser-sim`'s
    RUN/run.toml beside RUN/server; None when neither is there or readable."""
    try:
        saved = state_dir / CONFIG_FILE
        if saved.exists():
            names = json.loads(saved.read_text(encoding="utf-8"))["labels"]["class_names"]
        elif (state_dir.parent / SIM_CONFIG_FILE).exists():
            names = tomllib.loads((state_dir.parent / SIM_CONFIG_FILE).read_text(encoding="utf-8"))["labels"]["class_names"]
        else:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def read_epsilon_budget(state_dir: Path) -> float | None:
    """privacy.epsilon_budget from the config the server saved; None without one (or no saved config)."""
    try:
        budget = json.loads((state_dir / CONFIG_FILE).read_text(encoding="utf-8")).get("privacy", {}).get("epsilon_budget")
    except (OSError, ValueError, AttributeError):
        return None
    return float(budget) if isinstance(budget, (int, float)) else None


def _completed_round(state_dir: Path, records: list[dict[str, Any]]) -> int:
    progress = state_dir / PROGRESS_FILE
    if progress.exists():
        try:
            return int(json.loads(progress.read_text(encoding="utf-8"))["completed_round"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"cannot read {progress}: {exc}") from None
    return records[-1]["round"] if records else 0


def load_snapshot(state_dir: Path) -> RunSnapshot:
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        raise StateError(f"state dir {state_dir} does not exist or is not a directory")
    known = [state_dir / n for n in (METRICS_FILE, REGISTRY_FILE, PROGRESS_FILE)]
    if not any(p.exists() for p in known):
        raise StateError(f"{state_dir} is not a fedser state dir: it has none of {', '.join(p.name for p in known)}")
    records = read_metrics(state_dir / METRICS_FILE)
    address_file = state_dir / ADDRESS_FILE
    address = address_file.read_text(encoding="utf-8").strip() if address_file.exists() else None
    mtimes = [p.stat().st_mtime for p in known if p.exists()]
    return RunSnapshot(state_dir, _completed_round(state_dir, records), records, read_clients(state_dir / REGISTRY_FILE),
                       address or None, max(mtimes) if mtimes else None, read_class_names(state_dir),
                       read_stop_reason(state_dir), read_epsilon_budget(state_dir))
