"""Run `fedser-server` and kill -9 it (SIGKILL to itself: no handler, no flush, no cleanup) at a
named point of the Nth round's checkpoint, where a real kill would need a lucky race:

    python -m tests.faults.crashpoint POINT N serve ARGS...

    checkpoint-before-rename   round N's checkpoint temp file is written and fsynced, not renamed
    checkpoint-before-metrics  round N's checkpoint and progress.json are on disk, its metrics line is not
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from fedser_shared import fsutil

POINTS = {"checkpoint-before-rename": "global.safetensors", "checkpoint-before-metrics": "progress.json"}


def install(point: str, nth: int) -> None:
    target = POINTS[point]
    real_replace = os.replace
    seen = 0

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        nonlocal seen
        if Path(dst).name == target:
            seen += 1
            if seen == nth:
                if point == "checkpoint-before-metrics":
                    real_replace(src, dst)
                    fsutil._fsync_dir(Path(dst).parent)
                print(f"crashpoint {point} {nth}", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)

    fsutil.os.replace = replace  # type: ignore[assignment]


if __name__ == "__main__":
    install(sys.argv[1], int(sys.argv[2]))
    from fedser_server.cli import main

    sys.argv = ["fedser-server", *sys.argv[3:]]
    main()
