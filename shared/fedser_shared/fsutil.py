"""Atomic file writes: temp file in the same directory, fsync, rename, fsync the directory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from fedser_shared.errors import FedserError


def atomic_write_bytes(path: Path, data: bytes | bytearray | memoryview | Iterable[bytes | memoryview],
                       head: Callable[[], bytes] | None = None) -> None:
    """`data` may come in parts (written back to back, each one produced after the previous one is
    written), so that large files need no joined copy. `head`, once every part is written, gives
    the bytes to write over the file's start (a header that depends on what followed it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            for part in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                tmp.write(part)
            if head is not None:
                tmp.seek(0)
                tmp.write(head())
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync, so a crash loses at most the line being written."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_file_arg(path: str | None, what: str) -> bytes | None:
    """The bytes of a file named on the command line (None when not given); a clear error otherwise."""
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise FedserError(f"cannot read {what} {path}: {exc.strerror}") from None
