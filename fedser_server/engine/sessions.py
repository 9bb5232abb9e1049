"""Who is joined (DESIGN §3.1): join with identity checks, session credentials, liveness.

Shares the coordinator's lock and condition: a join or a leave wakes the round driver that
waits for clients.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from fedser_server.core.reports import MAX_COUNT
from fedser_server.security.tokens import TokenStore
from fedser_server.state.registry import ClientRecord, Registry
from fedser_shared.config import RunConfig
from fedser_shared.errors import (
    AuthenticationError,
    ConfigError,
    InvalidRequestError,
    SessionExpiredError,
    UnknownClientError,
)
from fedser_shared.logging import get_logger

log = get_logger(__name__)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Joined:
    record: ClientRecord
    session_token: str  # handed to the client once; the server keeps only its hash


class Sessions:
    def __init__(self, config: RunConfig, feature_dim: int, registry: Registry, tokens: TokenStore | None,
                 cond: threading.Condition, clock: Callable[[], float], wall_clock: Callable[[], float],
                 client_timeout_s: float) -> None:
        self._config, self.feature_dim, self.registry, self._tokens = config, feature_dim, registry, tokens
        self._cond, self._clock, self._wall = cond, clock, wall_clock
        self.client_timeout_s = client_timeout_s
        self._last_seen: dict[str, float] = {}  # client_id -> monotonic time of its last call

    def join(self, name: str, feature_name: str, feature_dim: int, label_counts: list[int],
             n_unlabeled: int, n_eval: int, client_id: str = "", token: str = "") -> Joined:
        name = self._identity(name, token)
        if feature_name != self._config.features.name or feature_dim != self.feature_dim:
            raise ConfigError(
                f"client features {feature_name}/{feature_dim} do not match the run's "
                f"{self._config.features.name}/{self.feature_dim}")
        if len(label_counts) != self._config.num_classes:
            raise ConfigError(f"client reports {len(label_counts)} label counts, the run has {self._config.num_classes} classes")
        for what, count in (("label count", max(label_counts, default=0)), ("n_unlabeled", n_unlabeled), ("n_eval", n_eval)):
            if count > MAX_COUNT:
                raise InvalidRequestError(f"{what} {count} is implausible (limit {MAX_COUNT})")
        with self._cond:
            record = self.registry.clients.get(client_id) if client_id else None
            if record is not None and record.name != name:
                raise UnknownClientError(f"client id '{client_id}' is registered to another client")
            if record is None:
                record = self.registry.by_name(name)
            now = self._wall()
            if record is None:
                record = ClientRecord(uuid.uuid4().hex[:16], name, list(label_counts), n_unlabeled, n_eval,
                                      feature_name, feature_dim, now, now)
            session_token = secrets.token_urlsafe(32)
            record.session_hash, record.session_ended = _digest(session_token), ""
            record.label_counts, record.n_unlabeled, record.n_eval = list(label_counts), n_unlabeled, n_eval
            record.last_seen, record.left, record.shutdown_sent = now, False, False
            ticket = self.registry.stage(record)
            self._last_seen[record.client_id] = self._clock()
        # written outside the lock, so that clients joining together share one transaction
        self.registry.commit(ticket)
        log.info("client_joined", client_id=record.client_id, name=name, n_labeled=record.n_labeled,
                 n_unlabeled=n_unlabeled, n_eval=n_eval, n_registered=len(self.registry.clients))
        with self._cond:
            self._cond.notify_all()
        return Joined(record, session_token)

    def _identity(self, name: str, token: str) -> str:
        """With enrolment tokens the token names the client; without, the client names itself."""
        if self._tokens is not None:
            enrolled = self._tokens.verify(token) if token else None
            if enrolled is None:
                raise AuthenticationError("join refused: missing, unknown or revoked enrolment token")
            return enrolled
        if not name or len(name) > 128 or not name.isprintable():
            raise InvalidRequestError("a client name must be 1-128 printable characters")
        return name

    def authenticate(self, client_id: str, session_token: str) -> ClientRecord:
        record = self.registry.clients.get(client_id)
        if record is None or not record.session_hash or not secrets.compare_digest(record.session_hash, _digest(session_token)):
            raise UnknownClientError(f"unknown client or bad session credential for client '{client_id[:64]}'")
        with self._cond:
            if not record.session_ended:
                if record.left:
                    record.session_ended = "the client left"
                elif self._clock() - self._last_seen.get(client_id, -1e18) > self.client_timeout_s:
                    record.session_ended = f"no call for more than {self.client_timeout_s:g} s"
            if record.session_ended:
                raise SessionExpiredError(f"session of client '{client_id}' expired ({record.session_ended}): join again")
            self.touch(client_id)
        return record

    def touch(self, client_id: str) -> None:
        self._last_seen[client_id] = self._clock()
        record = self.registry.clients.get(client_id)
        if record is not None:
            record.last_seen = self._wall()  # on disk with the next checkpoint (`status` shows it)

    def leave(self, client: ClientRecord, reason: str) -> None:
        with self._cond:
            client.left = True
            self.registry.save(client)
            log.info("client_left", client_id=client.client_id, reason=reason[:200])
            self._cond.notify_all()

    def alive(self) -> list[ClientRecord]:
        now = self._clock()
        return [c for c in self.registry.clients.values()
                if not c.left and now - self._last_seen.get(c.client_id, -1e18) <= self.client_timeout_s]

    def end(self, client_id: str, why: str) -> None:
        """End a client's session (it ignored a round): it counts again only once it joins anew."""
        record = self.registry.clients.get(client_id)
        if record is not None and not record.session_ended:
            record.session_ended = why
        self._last_seen.pop(client_id, None)
