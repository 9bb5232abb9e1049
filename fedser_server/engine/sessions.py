"""Who is joined (DESIGN §3.1): join with identity checks, session credentials, liveness.

A `Session` is a client's live connection to this server process: its credential (a SHA-256
hash), when it last called, why it ended. It lives in memory only; the client's stored row
(`state.registry.ClientRecord`) is what outlives the process. Shares the loop's lock and
condition: a join or a leave wakes the round loop that waits for clients.
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


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass(eq=False, slots=True)  # one per joined client: no __dict__
class Session:
    """A client's live session; `record` is its stored row."""

    record: ClientRecord
    token_hash: bytes
    last_call: float  # on the run's clock
    ended: str = ""  # why the session ended ("" while it is valid)
    shutdown_sent: bool = False

    @property
    def client_id(self) -> str:
        return self.record.client_id

    @property
    def n_labeled(self) -> int:
        return self.record.n_labeled

    @property
    def n_unlabeled(self) -> int:
        return self.record.n_unlabeled

    @property
    def n_eval(self) -> int:
        return self.record.n_eval


@dataclass(frozen=True)
class Joined:
    session: Session
    session_token: str  # handed to the client once; the server keeps only its hash

    @property
    def record(self) -> ClientRecord:
        return self.session.record


class Sessions:
    def __init__(self, config: RunConfig, feature_dim: int, registry: Registry, tokens: TokenStore | None,
                 cond: threading.Condition, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self._config, self.feature_dim, self.registry, self.tokens = config, feature_dim, registry, tokens
        self._cond, self._clock, self._wall = cond, clock, wall_clock
        self.client_timeout_s = config.server.client_timeout_s
        self._live: dict[str, Session] = {}  # client_id -> its current session

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
                # the id is only a hint: the client is who its token (or name) says, never another
                # client; it joins as itself and learns its own id from the reply
                log.warning("join_with_another_clients_id", client_id=client_id[:64], name=name)
                record = None
            if record is None:
                record = self.registry.by_name(name)
            now = self._wall()
            if record is None:
                record = ClientRecord(uuid.uuid4().hex[:16], name, list(label_counts), n_unlabeled, n_eval,
                                      feature_name, feature_dim, now, now)
            record.label_counts, record.n_unlabeled, record.n_eval = list(label_counts), n_unlabeled, n_eval
            record.last_seen, record.left = now, False
            session_token = secrets.token_urlsafe(32)
            # a new session replaces the client's previous one: its credential stops working
            session = self._live[record.client_id] = Session(record, _digest(session_token), self._clock())
            ticket = self.registry.stage(record)
        # written outside the lock, so that clients joining together share one transaction
        self.registry.commit(ticket)
        log.info("client_joined", client_id=record.client_id, name=name, n_labeled=record.n_labeled,
                 n_unlabeled=n_unlabeled, n_eval=n_eval, n_registered=len(self.registry.clients))
        with self._cond:
            self._cond.notify_all()
        return Joined(session, session_token)

    def _identity(self, name: str, token: str) -> str:
        """With enrolment tokens the token names the client; without, the client names itself."""
        if self.tokens is not None:
            enrolled = self.tokens.verify(token) if token else None
            if enrolled is None:
                raise AuthenticationError("join refused: missing, unknown or revoked enrolment token")
            return enrolled
        if not name or len(name) > 128 or not name.isprintable():
            raise InvalidRequestError("a client name must be 1-128 printable characters")
        return name

    def authenticate(self, client_id: str, session_token: str) -> Session:
        session = self._live.get(client_id)
        if session is None or not secrets.compare_digest(session.token_hash, _digest(session_token)):
            raise UnknownClientError(f"unknown client or bad session credential for client '{client_id[:64]}'")
        with self._cond:
            self.touch_if_alive(session)
        return session

    def touch_if_alive(self, session: Session) -> None:
        """Record a call from `session`, or raise SessionExpiredError if it ended or was silent past
        the client timeout (also for a poll parked before the silence: a woken device joins again)."""
        if not session.ended:
            if session.record.left:
                session.ended = "the client left"
            elif self._clock() - session.last_call > self.client_timeout_s:
                session.ended = f"no call for more than {self.client_timeout_s:g} s"
        if session.ended:
            raise SessionExpiredError(f"session of client '{session.client_id}' expired ({session.ended}): join again")
        self.touch(session)

    def touch(self, session: Session) -> None:
        session.last_call = self._clock()
        session.record.last_seen = self._wall()  # on disk with the next checkpoint (`status` shows it)

    def leave(self, session: Session, reason: str) -> None:
        with self._cond:
            session.record.left = True
            session.ended = "the client left"
            self.registry.save(session.record)
            log.info("client_left", client_id=session.client_id, reason=reason[:200])
            self._cond.notify_all()

    def _alive(self) -> list[Session]:
        now = self._clock()
        return [s for s in self._live.values()
                if not s.ended and not s.record.left and now - s.last_call <= self.client_timeout_s]

    def alive(self) -> list[ClientRecord]:
        """The stored rows of the clients whose session is valid and who called within the client timeout."""
        return [s.record for s in self._alive()]

    def awaiting_shutdown(self) -> int:
        """Alive clients that have not heard SHUTDOWN yet."""
        return sum(1 for s in self._alive() if not s.shutdown_sent)

    def end(self, client_id: str, why: str) -> None:
        """End a client's session (it ignored a round): it counts again only once it joins anew."""
        session = self._live.get(client_id)
        if session is not None and not session.ended:
            session.ended = why
