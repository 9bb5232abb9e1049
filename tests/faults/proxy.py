"""A fault-injecting TCP proxy on 127.0.0.1 (asyncio, on a thread of its own), put between clients
and the server: it adds latency to every chunk it forwards, and on a fixed schedule by connection
number (1-based, in the order they reached the server) cuts connections with a reset, closes them with a FIN, or stalls
them, each once the connection has carried a given number of bytes. The schedule makes the faults
land in the same places (mid-upload, mid-download) on every run; `counts` says what was injected."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

UP, DOWN = "client->server", "server->client"


@dataclass(frozen=True)
class Fault:
    kind: str  # "reset" | "fin" | "stall"
    direction: str  # UP or DOWN: whose bytes count toward `after_bytes`
    after_bytes: int
    stall_s: float = 0.0


@dataclass(frozen=True)
class Schedule:
    latency_s: float = 0.0
    faults: dict[int, Fault] = field(default_factory=dict)  # connection number -> its one fault
    read_bytes: int = 64 * 1024


@dataclass
class _Connection:
    number: int
    fault: Fault | None
    carried: Counter[str] = field(default_factory=Counter)
    stalled_until: float = 0.0
    done: bool = False  # its fault was injected


class FaultyProxy:
    def __init__(self, upstream_port: int, schedule: Schedule) -> None:
        self.upstream_port = upstream_port
        self.schedule = schedule
        self.counts: Counter[str] = Counter()
        self.carried: Counter[str] = Counter()  # bytes forwarded, by direction, over all connections
        self.port = 0
        self._numbers = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faulty-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:  # the server is not up (yet): not a connection of the schedule
            self.counts["upstream_refused"] += 1
            _reset(client_writer)
            return
        number = next(self._numbers)
        self.counts["connections"] += 1
        connection = _Connection(number, self.schedule.faults.get(number))
        writers = (client_writer, server_writer)
        await asyncio.gather(self._pump(client_reader, server_writer, UP, connection, writers),
                             self._pump(server_reader, client_writer, DOWN, connection, writers),
                             return_exceptions=True)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, direction: str,
                    connection: _Connection, writers: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        loop = asyncio.get_running_loop()
        while data := await source.read(self.schedule.read_bytes):
            if self.schedule.latency_s:
                await asyncio.sleep(self.schedule.latency_s)
                self.counts["delayed_chunks"] += 1
            connection.carried[direction] += len(data)
            self.carried[direction] += len(data)
            fault = connection.fault
            if fault is not None and not connection.done and fault.direction == direction \
                    and connection.carried[direction] >= fault.after_bytes:
                connection.done = True
                self.counts[fault.kind] += 1
                if fault.kind == "reset":
                    for writer in writers:
                        _reset(writer)
                    return
                if fault.kind == "fin":
                    for writer in writers:
                        writer.close()
                    return
                connection.stalled_until = loop.time() + fault.stall_s
            if connection.stalled_until > loop.time():  # both directions wait out a stall
                await asyncio.sleep(connection.stalled_until - loop.time())
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dropped NAT entry or a dead middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
