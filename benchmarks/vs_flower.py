"""Round overhead, fedser against Flower: same MLP, same clients, same rounds, trivial local work.

Both sides run a server process and client processes on loopback over real gRPC, with the
clients as threads, CLIENTS_PER_PROCESS to a process, on both sides alike:

- fedser: `fedser-server serve` (FedAvg) and the client daemon (`ClientDaemon`) with a trainer
  that returns a zero update at once; everything else is the real client: long-poll, streamed
  model with sha256, encode, streamed update, local state written atomically.
- Flower 1.42 (installed by this script into benchmarks/.venv-flower, apart from our pins):
  its gRPC transport (`start_server`/`start_client`, bidirectional streaming) with FedAvg and a
  NumPyClient whose `fit` returns the weights it got. Flower's newer deployment engine
  (SuperLink/SuperNode) no longer speaks gRPC to its nodes (DESIGN §8), so it is not this comparison.

Seconds per round, measured the same way on both sides: the interval between two consecutive new
global models (round r's minus round r-1's), for rounds 2..R (round 1 includes connecting),
median. It holds everything a side does between two models: for fedser that includes its
checkpoint (a round counts when its metrics line, written after the checkpoint, appears), for
Flower its in-memory aggregation.

    python benchmarks/vs_flower.py             # emobase (1.1 MB) x {10, 100} clients, 50 MB x 10 clients
    python benchmarks/vs_flower.py --quick     # emobase, 5 clients, 5 rounds (< 1 minute)
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    MB,
    ROOT,
    child_env,
    command_line,
    free_port,
    headline,
    machine_facts,
    markdown_table,
    reexec_with_malloc_env,
    stop,
    wait_for_port,
    write_results,
)

FLOWER_VERSION = "1.42.0"
FLOWER_VENV = ROOT / "benchmarks" / ".venv-flower"
FLOWER_SIDE = Path(__file__).resolve().parent / "_flower_side.py"
FEATURE_DIM, CLASSES = 988, 4
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MODELS = {"emobase": [256, 128], "50mb": None}
CLIENTS_PER_PROCESS = 10


def hidden_for_weights(weight_bytes: int) -> list[int]:
    params = weight_bytes / 4
    b = FEATURE_DIM + 2 + CLASSES
    h = int((-b + (b * b + 4 * (params - CLASSES)) ** 0.5) / 2)
    return [h, h]


def model_hidden(name: str) -> list[int]:
    return MODELS[name] or hidden_for_weights(50 * MB)


def model_bytes(hidden: list[int]) -> int:
    sizes = [FEATURE_DIM, *hidden, CLASSES]
    return 4 * sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def ensure_flower(venv: Path) -> Path:
    """Flower in its own virtual environment (no torch; our pins stay ours)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import flwr, sys; sys.exit(flwr.__version__ != '" + FLOWER_VERSION + "')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing flwr=={FLOWER_VERSION} into {venv} ...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"flwr=={FLOWER_VERSION}"], check=True)
    return python


# ------------------------------------------------------------------ fedser
def _fedser_clients(address: str, n: int, first: int, workdir: str) -> None:
    """Host n client daemons with a trivial trainer as threads of this process."""
    from fedser_client.core.trainer import TrainReport
    from fedser_client.local_store import LocalStore
    from fedser_client.transport.daemon import ClientDaemon, ClientIdentity
    from fedser_server.core.strategy import DELTA, WEIGHT
    from fedser_shared.logging import configure_logging
    from fedser_shared.train_metrics import TrainMetrics

    configure_logging("warning")

    class TrivialTrainer:
        def train(self, global_state, task, local_state):
            update = {DELTA + k[len(WEIGHT):]: np.zeros_like(v) for k, v in global_state.items() if k.startswith(WEIGHT)}
            report = TrainReport(TrainMetrics(n_samples=10, loss=0.0, n_labeled=10, local_steps=1))
            return update, local_state, report

    daemons = []
    for index in range(first, first + n):
        folder = Path(workdir) / f"client{index:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        identity = ClientIdentity(name=f"client{index:04d}", feature_name="emobase", feature_dim=FEATURE_DIM,
                                  label_counts=[3, 3, 2, 2], n_unlabeled=0, n_eval=0)
        daemons.append(ClientDaemon(address, identity, lambda _config: TrivialTrainer(), LocalStore(folder), [],
                                    connect_timeout_s=120))
    threads = [threading.Thread(target=d.run, daemon=True) for d in daemons]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _profiled(args: list[str], profile: Path | None, name: str) -> list[str]:
    """`py-spy record` around a Python child when profiling: collapsed stacks of the thread holding the GIL
    (where the Python side spends CPU; waits do not count)."""
    if profile is None:
        return [sys.executable, *args]
    profile.mkdir(parents=True, exist_ok=True)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))  # e.g. from a venv of its own on PATH
    return [py_spy, "record", "--format", "raw", "--rate", "250", "--gil", "-o", str(profile / f"{name}.txt"), "--",
            sys.executable, *args]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (Linux /proc; 0 elsewhere or once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def watch_rounds(metrics: Path, server: subprocess.Popen, timeout_s: float,
                 clients: list[subprocess.Popen] | None = None) -> tuple[list[float], list[tuple[float, float]]]:
    """perf_counter() when each round's line appears in metrics.jsonl, until the server exits, and at
    each of those moments the CPU seconds used so far by the server and by the client processes."""
    deadline, seen, marks, cpu = time.monotonic() + timeout_s, 0, [], []
    while server.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fedser did not finish within {timeout_s:.0f} s")
        try:
            complete = metrics.read_bytes().count(b"\n")
        except FileNotFoundError:
            complete = 0
        if complete > seen:
            now = time.perf_counter()
            used = (cpu_seconds(server.pid), sum(cpu_seconds(c.pid) for c in clients or []))
            marks += [now] * (complete - seen)
            cpu += [used] * (complete - seen)
            seen = complete
        time.sleep(0.002)
    return marks, cpu


def run_fedser(hidden: list[int], n_clients: int, rounds: int, workdir: Path, timeout_s: float,
               profile: Path | None = None) -> tuple[list[float], list[tuple[float, float]]]:
    from fedser_shared.config import load_run_config, to_toml

    config = load_run_config(None, {
        "model.hidden": hidden, "federation.algorithm": "fedavg", "federation.rounds": rounds,
        "federation.min_clients": n_clients, "federation.start_clients": n_clients, "federation.fraction": 1.0,
        "federation.eval_every": rounds + 1,
    })
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "run.toml").write_text(to_toml(config))
    port = free_port()
    server = subprocess.Popen(_profiled(["-m", "fedser_server.cli", "serve", "--address", f"127.0.0.1:{port}", "--state-dir",
                                         str(workdir / "server"), "--config", str(workdir / "run.toml"), "--insecure",
                                         "--log-level", "warning"], profile, "fedser_server"),
                              stdout=subprocess.DEVNULL, stderr=open(workdir / "server.log", "w"), env=child_env())
    clients = []
    try:
        wait_for_port(port, server)
        for first in range(0, n_clients, CLIENTS_PER_PROCESS):
            clients.append(subprocess.Popen(
                _profiled([__file__, "_fedser_clients", f"127.0.0.1:{port}", str(min(CLIENTS_PER_PROCESS, n_clients - first)),
                           str(first), str(workdir / "clients")], profile if first == 0 else None, "fedser_clients"),
                stdout=subprocess.DEVNULL, stderr=open(workdir / f"clients{first}.log", "w"), env=child_env()))
        marks, cpu = watch_rounds(workdir / "server" / "metrics.jsonl", server, timeout_s, clients)
        for proc in clients:  # they leave once they hear SHUTDOWN (and a profiler around one writes its file)
            proc.wait(timeout=30)
    finally:
        for proc in [*clients, server]:
            stop(proc)
    if len(marks) < rounds:
        raise RuntimeError(f"fedser finished {len(marks)} of {rounds} rounds; see {workdir}")
    return marks, cpu


# ------------------------------------------------------------------ Flower
def run_flower(python: Path, hidden: list[int], n_clients: int, rounds: int, workdir: Path, timeout_s: float) -> list[float]:
    workdir.mkdir(parents=True, exist_ok=True)
    port, out = free_port(), workdir / "rounds.json"
    env = child_env()
    server = subprocess.Popen([str(python), str(FLOWER_SIDE), "server", f"127.0.0.1:{port}", str(rounds), str(n_clients),
                               ",".join(map(str, hidden)), str(FEATURE_DIM), str(CLASSES), str(out)],
                              stdout=subprocess.DEVNULL, stderr=open(workdir / "server.log", "w"), env=env)
    clients = []
    try:
        wait_for_port(port, server)
        for first in range(0, n_clients, CLIENTS_PER_PROCESS):
            clients.append(subprocess.Popen([str(python), str(FLOWER_SIDE), "clients", f"127.0.0.1:{port}",
                                             str(min(CLIENTS_PER_PROCESS, n_clients - first))],
                                            stdout=subprocess.DEVNULL, stderr=open(workdir / f"clients{first}.log", "w"), env=env))
        server.wait(timeout=timeout_s)
    finally:
        for proc in [*clients, server]:
            stop(proc)
    ends = json.loads(out.read_text())
    return [float(ends[str(r)]) for r in range(1, rounds + 1)]


# ------------------------------------------------------------------ driver
def per_round(model_times: list[float]) -> float:
    """Median interval between consecutive new global models, rounds 2..R."""
    return statistics.median(b - a for a, b in itertools.pairwise(model_times))


def cpu_per_client_round(cpu: list[tuple[float, float]], n_clients: int) -> tuple[float, float]:
    """CPU milliseconds per client and round over rounds 2..R, (server, clients): the total over those rounds
    divided by rounds and clients (the clock ticks in 10 ms steps: a median of single rounds would round away)."""
    rounds = len(cpu) - 1
    return tuple(1000 * (cpu[-1][side] - cpu[0][side]) / rounds / n_clients for side in (0, 1))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--cases", default="emobase:10,emobase:100,50mb:10",
                        help="MODEL:CLIENTS pairs, comma-separated; models: emobase (D=988, 256-128) or 50mb")
    parser.add_argument("--quick", action="store_true", help="emobase, 5 clients, 5 rounds (< 1 minute)")
    parser.add_argument("--no-flower", action="store_true", help="fedser only (no Flower install); for smoke tests")
    parser.add_argument("--flower-venv", type=Path, default=FLOWER_VENV)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed for one run")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record py-spy profiles (collapsed stacks) of fedser's server and first client process here")
    parser.add_argument("--keep", type=Path, default=None, help="keep run folders (logs, metrics.jsonl) here")
    args = parser.parse_args()
    reexec_with_malloc_env(True)
    cases = [("emobase", 5)] if args.quick else [(m, int(n)) for m, n in (c.split(":") for c in args.cases.split(","))]
    rounds = 5 if args.quick else args.rounds
    if rounds < 2:
        parser.error("--rounds must be at least 2: a round's time is the interval since the previous round's model")
    flower = None if args.no_flower else ensure_flower(args.flower_venv)
    facts = machine_facts()
    facts["flower"] = "not run (--no-flower)" if flower is None else f"flwr {FLOWER_VERSION}, gRPC bidi transport, own venv"
    facts["layout"] = f"1 server process; clients as threads, {CLIENTS_PER_PROCESS} per process (both sides)"
    rows, ratios = [], []
    with tempfile.TemporaryDirectory(prefix="fedser-vs-flower-") as tmp:
        tmp = str(args.keep or tmp)
        for model, n_clients in cases:
            hidden = model_hidden(model)
            size = model_bytes(hidden)
            started = time.perf_counter()
            marks, cpu = run_fedser(hidden, n_clients, rounds, Path(tmp) / f"fedser-{model}-{n_clients}", args.timeout,
                                    args.profile / f"{model}-{n_clients}" if args.profile else None)
            fedser, (server_ms, clients_ms) = per_round(marks), cpu_per_client_round(cpu, n_clients)
            fedser_wall = time.perf_counter() - started
            flower_s = math.nan
            if flower is not None:
                flower_s = per_round(run_flower(flower, hidden, n_clients, rounds, Path(tmp) / f"flower-{model}-{n_clients}",
                                                args.timeout))
                ratios.append(fedser / flower_s)
            rows.append([model, f"{size / MB:.1f}", n_clients, rounds, f"{fedser:.3f}", f"{flower_s:.3f}",
                         f"{fedser / flower_s:.2f}" if flower is not None else "-", f"{server_ms:.2f}", f"{clients_ms:.2f}"])
            print(f"{model:8s} {size / MB:6.1f} MB  {n_clients:4d} clients  fedser {fedser:7.3f} s/round  "
                  f"Flower {flower_s:7.3f} s/round  fedser CPU ms per client-round: server {server_ms:.2f}, "
                  f"clients {clients_ms:.2f}  (fedser run {fedser_wall:.0f} s)", flush=True)
    table = markdown_table(["model", "MB", "clients", "rounds", "fedser s/round", "Flower s/round", "fedser/Flower",
                            "fedser server CPU ms/client-round", "fedser clients CPU ms/client-round"], rows)
    body = ("Median seconds per round over rounds 2..R: the interval between consecutive new global models (for fedser: "
            "checkpointed, its metrics line written), trivial local work, loopback. fedser's CPU per client and round: "
            "the user + system CPU its server process and its client processes used over rounds 2..R, divided by "
            "rounds and clients (Linux /proc).\n\n"
            f"{table}\n")
    path = write_results("vs_flower_quick" if args.quick else "vs_flower", "Round overhead: fedser vs Flower", command_line(),
                         facts, body, args.out)
    print(f"wrote {path}")
    if ratios:
        headline("fedser/flower round time", max(ratios))
    else:
        headline("fedser round time s", float(rows[-1][4]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_fedser_clients":
        _fedser_clients(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    else:
        main()
