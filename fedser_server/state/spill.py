"""Received update bytes parked on disk until they are folded into the round.

An unnamed file in the state dir: the page cache is not the server's resident memory, so the
uploads in flight cost disk space, not RAM, and a crash leaves nothing behind.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from fedser_shared.errors import DiskFullError, StateError


class SpillFile:
    def __init__(self, directory: Path) -> None:
        self._directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._file = tempfile.TemporaryFile(dir=directory, buffering=0)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"no disk space left to park the update in {directory}: retry later") from None
            raise StateError(f"cannot park an update in {directory}: {exc.strerror or exc}") from None

    def write(self, data: memoryview) -> None:
        try:
            self._write_all(data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"no disk space left to park the update in {self._directory}: retry later") from None
            raise StateError(f"cannot park an update on disk: {exc.strerror or exc}") from None

    def _write_all(self, data: memoryview) -> None:
        while len(data):
            data = data[self._file.write(data):]

    def read_at(self, offset: int, into: memoryview) -> None:
        """Fill `into` with the bytes written at `offset`."""
        while len(into):
            got = os.preadv(self._file.fileno(), [into], offset)
            if got == 0:
                raise StateError(f"a parked update ends before byte {offset}")
            into, offset = into[got:], offset + got

    def close(self) -> None:
        self._file.close()
