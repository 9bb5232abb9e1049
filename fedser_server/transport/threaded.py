"""Blocking handlers on worker threads of an asyncio gRPC server.

The server runs on `grpc.aio` so that a parked long-poll costs a coroutine, not a thread. The
handlers that block (Join and Leave write the registry, SubmitUpdate hashes and spills while
it streams, FetchModel frames the blob) keep their synchronous code and run on a bounded
thread pool; `ThreadContext` gives them the part of `grpc.ServicerContext` they use, with the
sync server's meaning: `abort` ends the handler, `is_active` turns false once the client went
away, `cancel` cuts the call (a pending read fails with `grpc.RpcError`).

grpc's own `migration_thread_pool` runs plain functions too, but its context has no
`is_active` or `cancel`, and SubmitUpdate needs both.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc

_END = object()
T = TypeVar("T")


def _drop_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Aborted(Exception):
    """Raised by `ThreadContext.abort` on the worker thread; the call ends with its status on the loop."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class CallCut(grpc.RpcError):  # type: ignore[misc]  # grpc ships no type stubs
    """A read from a call that the server cut (`cancel`) or the client left."""


class ThreadContext:
    """What a handler on a worker thread sees of its call (the sync API's names)."""

    def __init__(self, context: grpc.aio.ServicerContext, loop: asyncio.AbstractEventLoop) -> None:
        self._context, self._loop = context, loop
        self._trailing: tuple[tuple[str, str], ...] = ()
        self._gone = threading.Event()
        self._cut = threading.Event()
        self._reading: asyncio.Future[Any] | None = None

    # ----------------------------------------------------------- the handler's side
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._trailing = tuple(metadata)

    def time_remaining(self) -> float | None:
        remaining: float | None = self._context.time_remaining()
        return remaining

    def is_active(self) -> bool:
        return not (self._gone.is_set() or self._cut.is_set())

    def cancel(self) -> None:
        """Cut the call: the handler's pending and next reads fail; the client hears CANCELLED."""
        self._cut.set()
        self._loop.call_soon_threadsafe(self._stop_reading)

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    def peer(self) -> str:
        peer: str = self._context.peer()
        return peer

    def auth_context(self) -> Any:
        return self._context.auth_context()

    def messages(self, requests: AsyncIterator[Any]) -> Iterator[Any]:
        """The call's request stream, read from the worker thread one message at a time."""
        while True:
            if not self.is_active():
                raise CallCut()
            future = asyncio.run_coroutine_threadsafe(self._read(requests), self._loop)
            try:
                message = future.result()
            except (concurrent.futures.CancelledError, asyncio.CancelledError):
                raise CallCut() from None
            except Exception as exc:  # noqa: BLE001 - a read that fails is a broken stream, as on the sync server
                raise CallCut() from exc
            if message is _END:
                return
            yield message

    # ----------------------------------------------------------- the loop's side
    async def _read(self, requests: AsyncIterator[Any]) -> Any:
        if not self.is_active():
            raise asyncio.CancelledError()
        self._reading = asyncio.ensure_future(anext(requests, _END))
        try:
            return await self._reading
        finally:
            self._reading = None

    def _stop_reading(self) -> None:
        if self._reading is not None:
            self._reading.cancel()

    def client_left(self) -> None:
        """The client cancelled or vanished: the handler sees it through is_active and its reads."""
        self._gone.set()
        self._stop_reading()

    async def end_with(self, error: BaseException) -> None:
        """End the call after the handler raised `error` on its thread."""
        if isinstance(error, _Aborted):
            if self._trailing:
                self._context.set_trailing_metadata(self._trailing)
            await self._context.abort(error.code, error.details)
        if self._cut.is_set() and not self._gone.is_set():
            await self._context.abort(grpc.StatusCode.CANCELLED, "the server cut the call")
        raise error


class ThreadedHandlers:
    """Wrap blocking handler functions `(request, context)` into coroutines for grpc.aio."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self.pool = pool

    async def _on_thread(self, context: ThreadContext, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.pool, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # the thread finishes on its own (a refusal is still counted); nobody hears its answer,
            # and its end (an abort, a cut stream) is taken here so that it is not reported as an
            # exception nobody retrieved
            future.add_done_callback(_drop_outcome)
            context.client_left()
            raise
        except Exception as exc:  # noqa: BLE001 - the call ends with the status the handler chose
            await context.end_with(exc)

    def unary_unary(self, method: Callable[[Any, Any], Any]) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            ctx = ThreadContext(context, asyncio.get_running_loop())
            return await self._on_thread(ctx, method, request, ctx)

        return handler

    def stream_unary(self, method: Callable[[Iterator[Any], Any], Any]) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Any]:
        async def handler(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            ctx = ThreadContext(context, asyncio.get_running_loop())
            return await self._on_thread(ctx, lambda: method(ctx.messages(requests), ctx))

        return handler

    def stream_unary_opened(self, opening: Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Awaitable[T]],
                            method: Callable[[T, Iterator[Any], Any], Any]) -> Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], Any]:
        """A stream whose opening (`opening`, a coroutine on the loop: e.g. read and check its first
        message) holds no thread; only what it opened is handed to `method` on a worker thread,
        with the rest of the stream."""
        async def handler(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            opened = await opening(requests, context)
            ctx = ThreadContext(context, asyncio.get_running_loop())
            return await self._on_thread(ctx, lambda: method(opened, ctx.messages(requests), ctx))

        return handler

    def unary_stream(self, method: Callable[[Any, Any], Iterator[Any]]) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            ctx = ThreadContext(context, asyncio.get_running_loop())
            replies = iter(method(request, ctx))
            while (reply := await self._on_thread(ctx, next, replies, _END)) is not _END:
                yield reply

        return handler
