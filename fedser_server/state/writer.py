"""Ordered background writes: the round loop queues a round's checkpoint and metrics line and
goes on with the next round while they reach the disk, one after another, in queue order."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class OrderedWriter:
    """One thread runs the queued jobs in order. After a job fails, later jobs are skipped (a
    checkpoint must not follow one that is missing) and the failure is raised to the loop by
    its next `submit` or `flush`."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._failure: Exception | None = None
        self._thread = threading.Thread(target=self._work, name="fedser-writer", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def submit(self, job: Callable[[], None]) -> None:
        self._raise_failure()
        self._jobs.put(job)

    def flush(self) -> None:
        """Block until every queued job ran."""
        self._jobs.join()
        self._raise_failure()

    def close(self) -> None:
        """Run what is queued, then stop the thread; a failure was (or will be) raised by submit or flush."""
        self._jobs.put(None)
        self._thread.join()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                if self._failure is None:
                    job()
            except Exception as exc:  # noqa: BLE001 - handed to the loop's thread, which stops the run
                self._failure = exc
            finally:
                self._jobs.task_done()
        self._jobs.task_done()
