"""Helpers shared by the benchmarks: machine facts, timing, child processes, results files."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MIB = 1 << 20
MB = 1_000_000

from fedser_shared.transport import MALLOC_ENV  # noqa: E402  (allocator settings of DESIGN §8)


def reexec_with_malloc_env(enabled: bool = True) -> None:
    """Run this benchmark (and so every process it starts) with the allocator settings of DESIGN §8, or without any."""
    wanted = MALLOC_ENV if enabled else {}
    if all(os.environ.get(k) == v for k, v in wanted.items()) and (enabled or not any(k in os.environ for k in MALLOC_ENV)):
        return
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    env.update(wanted)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"child exited with code {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python_child(args: Sequence[str], **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], env=popen.pop("env", child_env()), **popen)  # type: ignore[arg-type]


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def payload(n_bytes: int, seed: int = 0) -> bytes:
    """Incompressible bytes (compression never flatters a transport number)."""
    return np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set (VmHWM) of a live process, from /proc."""
    return _status_field(pid, "VmHWM") * 1024


def _status_field(pid: int, field: str) -> int:
    """A number from /proc/PID/status (the first on its line: kB for memory fields)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def rss_bytes(pid: int) -> int:
    return _status_field(pid, "VmRSS") * 1024


def threads_of(pid: int) -> int:
    return _status_field(pid, "Threads")


def settled_rss(pid: int, within_s: float = 10.0) -> int:
    """A process's RSS once start-up garbage is freed: two readings 0.5 s apart within 1 MB."""
    previous, deadline = rss_bytes(pid), time.monotonic() + within_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = rss_bytes(pid)
        if abs(current - previous) < MB:
            return current
        previous = current
    return previous


class ThreadSampler(threading.Thread):
    """The most threads a process ran, read every 0.2 s until `stopped` is set or it exits."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.max_threads, self.stopped = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                self.max_threads = max(self.max_threads, threads_of(self.pid))
            except (OSError, RuntimeError):
                return


def machine_facts() -> dict[str, str]:
    import grpc

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    try:
        # --dirty: a result from uncommitted code says so
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "commit": commit,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, title: str, command: str, facts: dict[str, str], body: str, out_dir: Path | None = None) -> Path:
    """Write benchmarks/results/<name>.md (or <out_dir>/<name>.md) with command, machine facts and the table."""
    folder = out_dir or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    fact_lines = "\n".join(f"- {key}: {value}" for key, value in facts.items())
    path.write_text(f"# {title}\n\n```\n{command}\n```\n\n{fact_lines}\n\n{body.rstrip()}\n", encoding="utf-8")
    return path


def command_line() -> str:
    return " ".join([Path(sys.executable).name.replace("python3", "python"), *sys.argv])


def headline(name: str, value: float) -> None:
    """The last line every benchmark prints: `NAME = 0.00`."""
    print(f"{name} = {value:.2f}", flush=True)
