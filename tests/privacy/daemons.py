"""Client daemons of a gRPC federation, each on its own thread, stopped whatever the test's outcome."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from fedser_client.transport.daemon import ClientDaemon


@contextmanager
def running(daemons: Sequence[ClientDaemon]) -> Iterator[None]:
    threads = [threading.Thread(target=daemon.run, daemon=True) for daemon in daemons]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for daemon in daemons:
            daemon.stop()
        for thread in threads:
            thread.join(timeout=30)
