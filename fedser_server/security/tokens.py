"""Enrolment tokens, stored only as SHA-256 hashes in `tokens.json`.

A token is 32 random bytes (256 bits), so an unsalted SHA-256 is enough to make a stolen
tokens file useless: nothing shorter than the token itself can be brute-forced back out.
The file is re-read when it changes, so `fedser-server token add` works on a live server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fedser_shared.errors import ConfigError, StateError
from fedser_shared.fsutil import atomic_write_text

TOKEN_PREFIX = "fedser_"
TOKENS_FILE = "tokens.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_client_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(f"client name '{name[:80]}' must be 1-64 characters of letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    return name


@dataclass(frozen=True)
class TokenEntry:
    name: str
    sha256: str
    created_unix_s: float


class TokenStore:
    """The allowed enrolment tokens of one server; each names the client it enrols."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: list[TokenEntry] = []

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> TokenStore:
        return cls(Path(state_dir) / TOKENS_FILE)

    def entries(self) -> list[TokenEntry]:
        with self._lock:
            self._reload()
            return list(self._entries)

    def __len__(self) -> int:
        return len(self.entries())

    def verify(self, token: str) -> str | None:
        """The client name the token enrols, or None. Compares every hash in constant time."""
        digest = token_hash(token)
        found = None
        for entry in self.entries():
            if secrets.compare_digest(entry.sha256, digest):
                found = entry.name
        return found

    def add(self, name: str) -> str:
        """Create a token for `name` (replacing an older one) and return it: it is never stored."""
        check_client_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._reload()
            entries = [e for e in self._entries if e.name != name]
            entries.append(TokenEntry(name, token_hash(token), round(time.time(), 3)))
            self._write(entries)
        return token

    def revoke(self, name: str) -> bool:
        with self._lock:
            self._reload()
            entries = [e for e in self._entries if e.name != name]
            if len(entries) == len(self._entries):
                return False
            self._write(entries)
            return True

    def _write(self, entries: list[TokenEntry]) -> None:
        text = json.dumps({"tokens": [e.__dict__ for e in entries]}, indent=1)
        try:
            atomic_write_text(self.path, text)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise StateError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._entries, self._stamp = entries, self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StateError(f"cannot read tokens file {self.path}: {exc.strerror or exc}") from None
        return st.st_mtime_ns, st.st_size

    def _reload(self) -> None:
        stamp = self._stat()
        if stamp == self._stamp:
            return
        if stamp is None:
            self._entries, self._stamp = [], None
            return
        try:
            raw = json.loads(self.path.read_text())
            self._entries = [TokenEntry(str(t["name"]), str(t["sha256"]), float(t.get("created_unix_s", 0)))
                             for t in raw["tokens"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StateError(f"cannot read tokens file {self.path}: {exc}") from None
        self._stamp = stamp


def token_store(state_dir: Path, tokens_file: Path | None) -> TokenStore:
    """The tokens file the command line names: --tokens-file, else STATE_DIR/tokens.json."""
    return TokenStore(tokens_file) if tokens_file is not None else TokenStore.in_state_dir(state_dir)
