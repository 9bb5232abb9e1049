"""Run an extractor over many files, in this process or in a pool of worker processes.

A file that cannot be used yields an outcome with a reason, never an exception: one bad
file must not stop a run of thousands. Workers are spawned (not forked) so that a parent
holding torch threads or a CUDA context stays safe, and each builds its own extractor.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedser_client.data.audio import TARGET_RATE, check_usable, load_audio
from fedser_client.features.base import ExtractorSpec, FeatureExtractor
from fedser_shared.errors import DataError


@dataclass(frozen=True)
class Outcome:
    key: object                 # the caller's handle for the file
    vector: np.ndarray | None   # None when the file was skipped
    reason: str                 # why it was skipped
    seconds: float              # audio duration at 16 kHz


def extract_file(extractor: FeatureExtractor, path: Path) -> tuple[np.ndarray | None, str, float]:
    try:
        waveform = load_audio(path)
        check_usable(waveform)
        vector = np.asarray(extractor.extract(waveform), dtype=np.float32)
    except DataError as exc:
        return None, str(exc), 0.0
    except Exception as exc:  # noqa: BLE001 - an extractor failing on one file skips that file only
        return None, f"extractor failed: {type(exc).__name__}: {exc}".splitlines()[0], 0.0
    if vector.shape != (extractor.dim,):
        return None, f"extractor returned shape {vector.shape}, expected ({extractor.dim},)", 0.0
    if not np.isfinite(vector).all():
        return None, "extractor returned NaN or infinite values", 0.0
    return vector, "", len(waveform) / TARGET_RATE


_worker_extractor: FeatureExtractor | None = None


def _init_worker(spec: ExtractorSpec, threads: int) -> None:
    global _worker_extractor
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    torch.set_num_threads(threads)
    _worker_extractor = spec.build()


def _work(path: str) -> tuple[np.ndarray | None, str, float]:
    assert _worker_extractor is not None
    return extract_file(_worker_extractor, Path(path))


def run_extraction(
    jobs: Iterable[tuple[object, Path]], spec: ExtractorSpec, workers: int = 1,
    extractor: FeatureExtractor | None = None,
) -> Iterator[Outcome]:
    """Outcomes in completion order. `workers` <= 1, or a CUDA device, runs in this process."""
    if workers <= 1 or spec.device.startswith("cuda"):
        extractor = extractor or spec.build()
        for key, path in jobs:
            yield Outcome(key, *extract_file(extractor, path))
        return
    yield from _run_pool(iter(jobs), spec, workers)


def _run_pool(jobs: Iterator[tuple[object, Path]], spec: ExtractorSpec, workers: int) -> Iterator[Outcome]:
    threads = max(1, (os.cpu_count() or 1) // workers)
    window = 4 * workers  # bounded: memory does not grow with the number of files
    crashed = "a worker process died while extracting (a re-run retries)"
    while True:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(spec, threads))
        in_flight: dict[Future[Any], object] = {}
        try:
            while True:
                for job in itertools.islice(jobs, window - len(in_flight)):
                    try:
                        in_flight[pool.submit(_work, str(job[1]))] = job[0]
                    except BrokenProcessPool:
                        jobs = itertools.chain([job], jobs)
                        raise
                if not in_flight:
                    return
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    key = in_flight.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        yield Outcome(key, None, crashed, 0.0)
                        raise
                    yield Outcome(key, *result)
        except BrokenProcessPool:
            # a native crash takes the whole pool down: report what was in flight, start a fresh pool
            for key in in_flight.values():
                yield Outcome(key, None, crashed, 0.0)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
