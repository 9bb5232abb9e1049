"""The client registry, kept in memory and written through to SQLite: one stored row per client.

Sessions are not part of it (`engine.sessions.Session`): their credentials live only in memory,
as SHA-256 hashes, and end with the server process; a client whose session is gone joins again
and keeps its id.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedser_shared.errors import StateError


@dataclass(slots=True)  # one per registered client, kept in memory: no __dict__
class ClientRecord:
    client_id: str
    name: str
    label_counts: list[int]
    n_unlabeled: int
    n_eval: int
    feature_name: str
    feature_dim: int
    joined_at: float
    last_seen: float
    participations: int = 0
    left: bool = False

    @property
    def n_labeled(self) -> int:
        return sum(self.label_counts)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    label_counts TEXT NOT NULL,
    n_unlabeled INTEGER NOT NULL,
    n_eval INTEGER NOT NULL,
    feature_name TEXT NOT NULL,
    feature_dim INTEGER NOT NULL,
    joined_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    participations INTEGER NOT NULL DEFAULT 0,
    left INTEGER NOT NULL DEFAULT 0
)
"""


class Registry:
    def __init__(self, path: Path) -> None:
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            rows = list(self._db.execute(
                "SELECT client_id, name, label_counts, n_unlabeled, n_eval, feature_name, feature_dim, joined_at, last_seen, "
                "participations, left FROM clients"))
        except sqlite3.Error as exc:
            raise StateError(f"cannot open the client registry {path}: {exc}") from None
        self._lock = threading.Lock()  # one transaction at a time
        self._staging = threading.Lock()  # guards the rows waiting to be written
        self._pending: dict[str, tuple[object, ...]] = {}  # client_id -> its latest staged row
        self._staged = self._written = 0  # tickets handed out / written to disk
        self.clients: dict[str, ClientRecord] = {}
        self._by_name: dict[str, ClientRecord] = {}  # names are unique (the table says so): a join looks up in O(1)
        for row in rows:
            record = ClientRecord(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5], row[6], row[7], row[8], row[9], bool(row[10]))
            self.clients[record.client_id] = self._by_name[record.name] = record

    def by_name(self, name: str) -> ClientRecord | None:
        return self._by_name.get(name)

    def save(self, record: ClientRecord) -> None:
        """Write the record through, durably. Saves from several threads at once share one
        transaction (one fsync): 10,000 clients joining at once are not 10,000 fsyncs in a row."""
        self.commit(self.stage(record))

    def stage(self, record: ClientRecord) -> int:
        """Take the record as it is now (call it under the lock that guards the record); its
        row is written by the first `commit` of this ticket or a later one."""
        row = (record.client_id, record.name, json.dumps(record.label_counts), record.n_unlabeled, record.n_eval,
               record.feature_name, record.feature_dim, record.joined_at, record.last_seen, record.participations,
               int(record.left))
        with self._staging:
            self.clients[record.client_id] = self._by_name[record.name] = record
            self._pending[record.client_id] = row
            self._staged += 1
            return self._staged

    def commit(self, ticket: int) -> None:
        """Return once the row of `ticket` is on disk: written by this call, with every row staged
        so far, or already by a concurrent one."""
        with self._lock:
            if self._written >= ticket:
                return
            with self._transaction():
                written = self._write_pending()
            self._written = written

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One SQLite transaction (the caller holds `_lock`): committed, or rolled back on any error."""
        self._db.execute("BEGIN")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _write_pending(self) -> int:
        """Write the staged rows (inside the caller's transaction); returns the last ticket written.
        On failure the rows go back to the queue (unless staged anew meanwhile)."""
        with self._staging:
            rows, self._pending = self._pending, {}
            upto = self._staged
        try:
            self._db.executemany(
                "INSERT INTO clients VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(client_id) DO UPDATE SET "
                "name=excluded.name, label_counts=excluded.label_counts, n_unlabeled=excluded.n_unlabeled, n_eval=excluded.n_eval, "
                "feature_name=excluded.feature_name, feature_dim=excluded.feature_dim, last_seen=excluded.last_seen, "
                "participations=excluded.participations, left=excluded.left", list(rows.values()))
        except BaseException:
            with self._staging:
                self._pending = {**rows, **self._pending}
            raise
        return upto

    def save_many(self, records: list[ClientRecord]) -> None:
        """Write several records in one transaction (the participations of a finished round),
        after the rows staged before them."""
        with self._lock:
            with self._transaction():
                written = self._write_pending()
                for record in records:
                    self._db.execute("UPDATE clients SET participations=?, last_seen=?, left=? WHERE client_id=?",
                                     (record.participations, record.last_seen, int(record.left), record.client_id))
            self._written = written

    def close(self) -> None:
        with self._lock:
            self._db.close()
