"""Make everything the server process writes to stderr a JSON line, not only structlog's events.

grpc's C core (e.g. "Handshake failed ..." when a plaintext client meets a TLS server), the CLI's
one-line error and stray warnings write to file descriptor 2 directly. `capture()` puts a pipe
in place of fd 2; a thread passes lines that already are JSON objects through unchanged and wraps
every other line as {"event": "stderr_line", "source": ..., "message": ...}.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
from datetime import UTC, datetime

# grpc C core / abseil: "E0101 12:00:00.000000  123 file.cc:42] message"
_CORE_LINE = re.compile(r"^([EWIF])\d{4} [\d:.]+\s+\d+ ([^\]]+)\] (.*)$")
_LEVEL = {"E": "error", "W": "warning", "I": "info", "F": "critical"}


def as_json(line: str) -> str:
    """The line itself when it is a JSON object, else a JSON event that carries it."""
    stripped = line.rstrip("\r\n")
    try:
        if isinstance(json.loads(stripped), dict):
            return stripped
    except ValueError:
        pass
    event: dict[str, object] = {"event": "stderr_line", "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
    core = _CORE_LINE.match(stripped)
    if core:
        event.update(level=_LEVEL[core.group(1)], source="grpc", location=core.group(2), message=core.group(3))
    else:
        event.update(level="warning", source="process", message=stripped)
    return json.dumps(event)


def capture() -> None:
    """Route fd 2 through the JSON wrapper until the process exits (idempotent per process)."""
    if getattr(capture, "_installed", False):
        return
    capture._installed = True  # type: ignore[attr-defined]
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as lines, \
                os.fdopen(real, "w", encoding="utf-8", buffering=1, closefd=False) as out:
            for line in lines:
                if line.strip():
                    out.write(as_json(line) + "\n")

    thread = threading.Thread(target=pump, name="fedser-json-stderr", daemon=True)
    thread.start()

    def restore() -> None:
        # the last lines (the CLI's error, the run's end) are written before this; closing fd 2
        # ends the pump's input, and it drains what is left before the process goes
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)
        thread.join(timeout=5)

    atexit.register(restore)
