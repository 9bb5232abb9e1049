"""The one path of a refused call: typed error -> status code, `fedser-refusal` trailer key,
refusal counter and structlog event, for every handler (docs/protocol.md lists the keys).

A handler wraps its work in `RefusalPath.guard` (a blocking handler, on a worker thread) or
`RefusalPath.guard_on_loop` (a coroutine on the server's event loop), or uses the `refusing` /
`refusing_on_loop` decorators for a unary handler whose request names its session and round.
The guard yields a `Caller` that a streaming handler fills in once it knows who is calling.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc

from fedser_shared.errors import (
    AuthenticationError,
    ClientCancelledError,
    ConfigError,
    CorruptBlobError,
    DiskFullError,
    FedserError,
    HeaderTimeoutError,
    InvalidRequestError,
    InvalidUpdateError,
    MalformedShareError,
    MaskedInputError,
    NotParticipatingError,
    ProtocolMismatchError,
    SecAggError,
    SecAggStageError,
    ServerBusyError,
    ServerStoppingError,
    SessionExpiredError,
    StaleRoundError,
    UnknownClientError,
    UploadSlotsBusyError,
)
from fedser_shared.logging import get_logger
from fedser_shared.refusal import REFUSAL_METADATA_KEY, RETRY_AFTER_METADATA_KEY

log = get_logger(__name__)

STATUS_OF: dict[type[FedserError], grpc.StatusCode] = {
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    SessionExpiredError: grpc.StatusCode.UNAUTHENTICATED,
    ServerStoppingError: grpc.StatusCode.UNAVAILABLE,
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    ProtocolMismatchError: grpc.StatusCode.FAILED_PRECONDITION,
    UnknownClientError: grpc.StatusCode.PERMISSION_DENIED,
    NotParticipatingError: grpc.StatusCode.PERMISSION_DENIED,
    StaleRoundError: grpc.StatusCode.FAILED_PRECONDITION,
    InvalidUpdateError: grpc.StatusCode.INVALID_ARGUMENT,
    CorruptBlobError: grpc.StatusCode.INVALID_ARGUMENT,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    ServerBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DiskFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    HeaderTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
    ClientCancelledError: grpc.StatusCode.CANCELLED,
    MalformedShareError: grpc.StatusCode.INVALID_ARGUMENT,
    MaskedInputError: grpc.StatusCode.INVALID_ARGUMENT,
    SecAggStageError: grpc.StatusCode.FAILED_PRECONDITION,
    SecAggError: grpc.StatusCode.FAILED_PRECONDITION,  # the secure round cannot be unmasked: it is retried
}

# a call that broke under the handler (the client cancelled, died, or was cut off): nothing is kept
STREAM_BROKEN = "stream_broken"

F = TypeVar("F", bound=Callable[..., Any])


def status_code_for(error: FedserError) -> grpc.StatusCode:
    for kind, code in STATUS_OF.items():
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


class RefusalCounter(Protocol):
    def __call__(self, rpc: str, reason: str, update: bool) -> None: ...


@dataclass
class Caller:
    """Who a call is from, as far as the handler knows (for the counter and the log event)."""

    rpc: str
    client_id: str = ""
    round: int = 0

    @classmethod
    def of(cls, rpc: str, request: Any) -> Caller:
        session = getattr(request, "session", None)
        client_id = session.client_id if session is not None else getattr(request, "client_id", "")
        return cls(rpc, client_id[:64], getattr(request, "round", 0))


class RefusalPath:
    def __init__(self, count: RefusalCounter) -> None:
        self._count = count

    def record(self, caller: Caller, reason: str, detail: str) -> None:
        """Count and log a refusal (or a broken call) without ending the call."""
        self._count(caller.rpc, reason, caller.rpc in UPDATE_RPCS)
        log.warning("update_refused" if caller.rpc in UPDATE_RPCS else "request_refused", rpc=caller.rpc,
                    round=caller.round, client_id=caller.client_id[:64], reason=reason, detail=detail[:300])

    def _refused(self, caller: Caller, error: FedserError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
        self.record(caller, error.reason, str(error))
        trailer: tuple[tuple[str, str], ...] = ((REFUSAL_METADATA_KEY, error.reason),)
        if isinstance(error, UploadSlotsBusyError):
            trailer += ((RETRY_AFTER_METADATA_KEY, str(max(1, round(error.retry_after_s * 1000)))),)
        return status_code_for(error), str(error), trailer

    @contextmanager
    def guard(self, context: grpc.ServicerContext, caller: Caller) -> Iterator[Caller]:
        """For a blocking handler: a FedserError raised in the block ends the call refused."""
        try:
            yield caller
        except FedserError as exc:
            code, details, trailer = self._refused(caller, exc)
            context.set_trailing_metadata(trailer)
            context.abort(code, details)
        except grpc.RpcError:
            self.record(caller, STREAM_BROKEN if context.is_active() else ClientCancelledError.reason,
                        "the call ended abnormally")
            raise

    @asynccontextmanager
    async def guard_on_loop(self, context: grpc.aio.ServicerContext, caller: Caller) -> AsyncIterator[Caller]:
        """`guard` for a coroutine handler on the server's event loop."""
        try:
            yield caller
        except FedserError as exc:
            await self.abort_on_loop(context, caller, exc)

    async def abort_on_loop(self, context: grpc.aio.ServicerContext, caller: Caller, error: FedserError) -> None:
        """End a coroutine handler's call refused (counted and logged)."""
        code, details, trailer = self._refused(caller, error)
        context.set_trailing_metadata(trailer)
        await context.abort(code, details)


UPDATE_RPCS = frozenset({"SubmitUpdate", "SubmitSmallUpdate"})


class _Refusing(Protocol):
    refusals: RefusalPath


def refusing(method: F) -> F:
    """A blocking unary handler `(self, request, context)` whose FedserErrors become refusals."""
    @functools.wraps(method)
    def wrapper(self: _Refusing, request: Any, context: grpc.ServicerContext) -> Any:
        with self.refusals.guard(context, Caller.of(method.__name__, request)):
            return method(self, request, context)

    return wrapper  # type: ignore[return-value]


def refusing_on_loop(method: F) -> F:
    """`refusing` for a coroutine handler."""
    # no context manager: a parked poll holds this frame, and an async generator per call would be
    # ~1 KB more per client at 10,000 parked polls
    @functools.wraps(method)
    async def wrapper(self: _Refusing, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except FedserError as exc:
            await self.refusals.abort_on_loop(context, Caller.of(method.__name__, request), exc)

    return wrapper  # type: ignore[return-value]
