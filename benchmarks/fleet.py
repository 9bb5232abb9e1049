"""Fleet scale: thousands of joined clients on one coordinator, 100 sampled per round.

The server is the real `fedser-server serve` process (FedAvg, emobase model [256, 128], small
enough to travel inline in the task); the clients are lightweight stand-ins (`_fleet.py`:
grpc.aio, one channel each, `--per-process` to a process) that speak the real protocol over
loopback: Join, heartbeats, long-poll GetTask, the model as the daemon takes it, a pre-made
update streamed with its checksum trailer. For each fleet size the run reports rounds
completed, seconds per round (from the server's metrics.jsonl), the server's threads (the
most seen in /proc, sampled every 0.2 s) and RSS (settled base before any client, peak VmHWM
after) and RSS per joined client. The question is whether threads and RSS per client stay
flat from the small fleet to the large one, and whether rounds keep completing promptly.

    python benchmarks/fleet.py            # 1,000 and 10,000 joined
    python benchmarks/fleet.py --quick    # 200 and 1,000 joined (< 1 minute on an idle box)
    python benchmarks/fleet.py --joined-only  # no round: RSS per joined client, every poll parked

`--idle-poll S` runs the server in idle polling (`federation.idle_poll_s`): a poll with nothing
for its client is answered at once with a come-back time of ~S seconds, and the stand-ins wait
it out with their connection closed (as the daemon does), so a joined client holds neither a
parked call nor a connection. `--tls` serves with TLS (development certificates made for the
run): every reconnect is then a TLS handshake. Server CPU seconds are read from /proc (the whole
run; with `--joined-only` also a 60 s window once all have joined: the cost of keeping them).

`--joined-only` measures what joined clients cost by themselves: the run needs one client more
than join, so no round starts (no inline models in flight); once all have joined (the registry's
row count) and the server's RSS has settled, (RSS - base) / joined is the cost of a joined client
with its session, its TCP connection and its parked GetTask.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    MB,
    ThreadSampler,
    child_env,
    command_line,
    free_port,
    headline,
    machine_facts,
    markdown_table,
    peak_rss_bytes,
    reexec_with_malloc_env,
    rss_bytes,
    settled_rss,
    stop,
    threads_of,
    wait_for_port,
    write_results,
)

FLEET = Path(__file__).resolve().parent / "_fleet.py"
HIDDEN = [256, 128]
FEATURE_DIM, CLASSES = 988, 4


@dataclass
class FleetSettings:
    sampled: int = 100
    rounds: int = 3
    per_process: int = 2500  # 500 (20 processes for 10,000) starved the 2-core box: joins crawled
    heartbeat_s: float = 60.0
    client_timeout_s: float = 900.0
    poll_timeout_s: float = 60.0  # 20 s: 500 re-polls a second at 10,000 joined (results/fleet.md)
    round_timeout_s: float = 300.0
    join_timeout_s: float = 600.0
    own_connections: bool = True  # a TCP connection per stand-in, as on separate devices (False: one per fleet process)
    inline_model: bool = True  # False: the model is not put in the task, every sampled client calls FetchModel
    joined_only: bool = False  # no round starts: RSS once every client has joined and its poll is parked
    idle_poll_s: float | None = None  # federation.idle_poll_s: idle polling, the stand-ins disconnect while away
    disconnect_after_s: float = 5.0  # the daemon's threshold: a come-back time this long is waited out disconnected
    tls: bool = False  # serve with TLS: a reconnect is a TLS handshake
    cpu_window_s: float = 60.0  # --joined-only: server CPU over this window once all have joined


@dataclass
class FleetRun:
    clients: int
    rounds_done: int = 0
    round_seconds: list[float] = field(default_factory=list)
    join_s: float = 0.0  # round 1's wait for the fleet to join (metrics.jsonl wait_seconds)
    base_rss: int = 0
    peak_rss: int = 0
    max_threads: int = 0
    base_threads: int = 0
    wall_s: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    server_exit: int | None = None
    log_tail: list[str] = field(default_factory=list)
    joined: int = 0  # registry rows when the joined-only RSS was read
    joined_rss: int = 0  # settled RSS with every client joined and no round (--joined-only)
    cpu_s: float = 0.0  # server CPU seconds (user + system) from the first client to the end
    window_cpu_s: float = float("nan")  # --joined-only: server CPU seconds over the window once all joined
    window_rss: int = 0  # --joined-only: RSS at the end of that window (what a join storm left has drained by then)

    @property
    def rss_per_joined(self) -> float:
        return (self.joined_rss - self.base_rss) / max(1, self.joined)

    @property
    def rss_per_joined_after_window(self) -> float:
        return (self.window_rss - self.base_rss) / max(1, self.joined)

    @property
    def rss_per_client(self) -> float:
        return (self.peak_rss - self.base_rss) / self.clients

    @property
    def median_round_s(self) -> float:
        return statistics.median(self.round_seconds) if self.round_seconds else float("nan")


def update_spec() -> dict[str, list[int]]:
    from fedser_server.core.strategy import FedAvg
    from fedser_shared.weights import initial_weights

    strategy = FedAvg()
    state = strategy.initial_state(initial_weights(FEATURE_DIM, CLASSES, HIDDEN, 0))
    return {name: list(s.shape) for name, s in strategy.expected_update(state).items()}


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user + system (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_command(port: int, workdir: Path, settings: FleetSettings) -> list[str]:
    transport = (["--tls-cert", str(workdir / "pki" / "server.pem"), "--tls-key", str(workdir / "pki" / "server.key"),
                  "--open-enrolment"] if settings.tls else ["--insecure"])
    return [sys.executable, "-m", "fedser_server.cli", "serve", "--address", f"127.0.0.1:{port}",
            "--state-dir", str(workdir / "server"), "--config", str(workdir / "run.toml"), *transport,
            "--log-level", "warning", "--client-timeout", f"{settings.client_timeout_s:g}",
            "--heartbeat-interval", f"{settings.heartbeat_s:g}"]


def write_config(workdir: Path, n_clients: int, settings: FleetSettings) -> None:
    from fedser_shared.config import load_run_config, to_toml

    config = load_run_config(None, {
        "model.hidden": HIDDEN, "federation.algorithm": "fedavg", "federation.rounds": settings.rounds,
        "federation.min_clients": settings.sampled, "federation.start_clients": n_clients + settings.joined_only,
        "federation.fraction": settings.sampled / n_clients, "federation.eval_every": settings.rounds + 1,
        "federation.round_timeout_s": settings.round_timeout_s, "federation.poll_timeout_s": settings.poll_timeout_s,
        **({} if settings.inline_model else {"federation.inline_model_max_bytes": 0}),
        **({"federation.idle_poll_s": settings.idle_poll_s} if settings.idle_poll_s else {}),
    })
    workdir.mkdir(parents=True, exist_ok=True)
    if settings.tls:
        from fedser_server.security.certs import write_dev_pki

        write_dev_pki(workdir / "pki", [], [])
    (workdir / "run.toml").write_text(to_toml(config))


def read_metrics(workdir: Path) -> list[dict[str, object]]:
    metrics = workdir / "server" / "metrics.jsonl"
    if not metrics.exists():
        return []
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


def collect_counts(fleets: list[subprocess.Popen]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for proc in fleets:
        out = proc.stdout.read() if proc.stdout else ""
        for line in out.splitlines():
            if line.startswith("{"):
                for key, value in json.loads(line)["counts"].items():
                    counts[key] = counts.get(key, 0) + value
    return counts


def run_fleet(n_clients: int, settings: FleetSettings, workdir: Path, spec: dict[str, list[int]]) -> FleetRun:
    write_config(workdir, n_clients, settings)
    port = free_port()
    server = subprocess.Popen(server_command(port, workdir, settings), stdout=subprocess.DEVNULL,
                              stderr=open(workdir / "server.log", "w"), env=child_env())
    run = FleetRun(n_clients)
    fleets: list[subprocess.Popen] = []
    started = time.perf_counter()
    try:
        wait_for_port(port, server)
        run.base_rss = settled_rss(server.pid)
        run.base_threads = threads_of(server.pid)
        Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # the peak counts from here on
        cpu_at_start = cpu_seconds(server.pid)
        sampler = ThreadSampler(server.pid)
        sampler.start()
        for first in range(0, n_clients, settings.per_process):
            n = min(settings.per_process, n_clients - first)
            fleets.append(subprocess.Popen(
                [sys.executable, str(FLEET), f"127.0.0.1:{port}", str(n), str(first), json.dumps(spec), "--fetch",
                 *(["--own-connections"] if settings.own_connections else []),
                 *(["--disconnect-after", f"{settings.disconnect_after_s:g}"] if settings.idle_poll_s else []),
                 *(["--tls", str(workdir / "pki" / "ca.pem")] if settings.tls else [])],
                stdout=subprocess.PIPE, stderr=open(workdir / f"fleet{first}.log", "w"), env=child_env(), text=True))
        if settings.joined_only:
            run.joined = wait_for_joined(workdir, n_clients, server, time.monotonic() + settings.join_timeout_s)
            time.sleep(5.0)  # the last joiners' first polls park
            run.joined_rss = settled_rss(server.pid, within_s=60.0)
            run.peak_rss = peak_rss_bytes(server.pid)
            window_start = cpu_seconds(server.pid)
            time.sleep(settings.cpu_window_s)
            run.window_cpu_s = cpu_seconds(server.pid) - window_start
            run.window_rss = rss_bytes(server.pid)
            run.cpu_s = cpu_seconds(server.pid) - cpu_at_start
        deadline = time.monotonic() + (0.0 if settings.joined_only else
                                       settings.join_timeout_s + settings.rounds * settings.round_timeout_s)
        while server.poll() is None and time.monotonic() < deadline:
            try:
                run.peak_rss = peak_rss_bytes(server.pid)
                run.cpu_s = cpu_seconds(server.pid) - cpu_at_start  # read while it runs: an exited one's is gone
            except (OSError, RuntimeError, IndexError):
                pass  # exiting: a zombie has no memory figures left
            time.sleep(0.2)
        sampler.stopped.set()
        run.max_threads = sampler.max_threads
    finally:
        run.wall_s = time.perf_counter() - started
        for proc in [server, *fleets]:
            stop(proc, grace_s=20)
    run.counts = collect_counts(fleets)
    records = read_metrics(workdir)
    run.rounds_done = len(records)
    run.round_seconds = [float(r["seconds"]) for r in records]
    run.join_s = float(records[0].get("wait_seconds", 0.0)) if records else float("nan")
    run.server_exit = server.returncode
    run.log_tail = (workdir / "server.log").read_text(errors="replace").strip().splitlines()[-2:]
    return run


def registered(workdir: Path) -> int:
    """Rows in the server's client registry (read-only; the server writes it in WAL mode)."""
    path = workdir / "server" / "registry.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM clients").fetchone()[0])
    except sqlite3.Error:
        return 0


def wait_for_joined(workdir: Path, n_clients: int, server: subprocess.Popen, deadline: float) -> int:
    count = 0
    while server.poll() is None and time.monotonic() < deadline:
        count = registered(workdir)
        if count >= n_clients:
            break
        time.sleep(1.0)
    return count


def fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1000,10000", help="fleet sizes, comma-separated: the first is the baseline")
    parser.add_argument("--sampled", type=int, default=100, help="clients sampled per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-process", type=int, default=2500, help="client stand-ins per fleet process")
    parser.add_argument("--heartbeat", type=float, default=60.0, help="serve --heartbeat-interval (seconds)")
    parser.add_argument("--client-timeout", type=float, default=900.0, help="serve --client-timeout (seconds)")
    parser.add_argument("--poll-timeout", type=float, default=60.0, help="federation.poll_timeout_s")
    parser.add_argument("--shared-connections", action="store_true",
                        help="the stand-ins of one process share one TCP connection (how _fleet ran before)")
    parser.add_argument("--no-inline-model", action="store_true", help="clients fetch the model with FetchModel instead")
    parser.add_argument("--joined-only", action="store_true",
                        help="no round: the server's RSS per joined client once all have joined (polls parked)")
    parser.add_argument("--idle-poll", type=float, default=None, metavar="S",
                        help="federation.idle_poll_s: idle polling, the stand-ins wait out come-back times disconnected")
    parser.add_argument("--disconnect-after", type=float, default=5.0, metavar="S",
                        help="with --idle-poll: the stand-ins close their connection for a come-back time this long (the daemon's 5 s)")
    parser.add_argument("--cpu-window", type=float, default=60.0, metavar="S",
                        help="with --joined-only: server CPU seconds over this window once all have joined")
    parser.add_argument("--tls", action="store_true", help="serve with TLS (development certificates): a reconnect is a handshake")
    parser.add_argument("--quick", action="store_true", help="200 and 1,000 joined, 2 rounds (< 1 minute)")
    parser.add_argument("--label", default="", help="what this run measures, written into the results file name")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    reexec_with_malloc_env(True)
    if args.quick:
        args.clients, args.rounds = "200,1000", 2
    sizes = [int(c) for c in args.clients.split(",") if c.strip()]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(sizes) + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))  # inherited by the server
        if min(wanted, hard) < wanted:
            raise SystemExit(f"the server needs ~{wanted} file descriptors, the hard limit is {hard} (ulimit -n)")
    settings = FleetSettings(sampled=args.sampled, rounds=args.rounds, per_process=args.per_process,
                             heartbeat_s=args.heartbeat, client_timeout_s=args.client_timeout, poll_timeout_s=args.poll_timeout,
                             inline_model=not args.no_inline_model, own_connections=not args.shared_connections,
                             joined_only=args.joined_only, idle_poll_s=args.idle_poll,
                             disconnect_after_s=args.disconnect_after, tls=args.tls, cpu_window_s=args.cpu_window)
    facts = machine_facts()
    facts["setup"] = (f"fedser-server serve, FedAvg, emobase hidden {HIDDEN} ({'inline in the task' if settings.inline_model else 'FetchModel'}), {settings.sampled} sampled "
                      f"per round, {settings.rounds} rounds, --heartbeat-interval {settings.heartbeat_s:g} "
                      f"--client-timeout {settings.client_timeout_s:g}, poll_timeout_s {settings.poll_timeout_s:g}, "
                      + (f"idle polling: idle_poll_s {settings.idle_poll_s:g}, stand-ins disconnected for come-back times "
                         f">= {settings.disconnect_after_s:g} s" if settings.idle_poll_s else "long-poll (no idle polling)")
                      + f", {'TLS' if settings.tls else 'plaintext (--insecure)'}; clients: "
                      f"grpc.aio stand-ins (`_fleet.py`), one channel each, "
                      f"{'a TCP connection each' if settings.own_connections else 'one TCP connection per process'}, "
                      f"{settings.per_process} per process; "
                      "threads = most seen in /proc/PID/status; RSS base = settled before any client, peak = VmHWM after; "
                      "RSS/client = (peak - base) / joined"
                      + ("; joined-only: no round starts, RSS/joined = (settled RSS once all joined - base) / joined"
                         if settings.joined_only else ""))
    spec = update_spec()
    runs: list[FleetRun] = []
    with tempfile.TemporaryDirectory(prefix="fedser-fleet-") as tmp:
        for n in sizes:
            run = run_fleet(n, settings, Path(tmp) / f"fleet-{n}", spec)
            runs.append(run)
            print(f"{n:6d} joined: rounds {run.rounds_done}/{settings.rounds}  seconds/round "
                  f"{' '.join(f'{s:.1f}' for s in run.round_seconds) or '-'}  all joined after {run.join_s:.0f} s  "
                  f"threads {run.max_threads} (base {run.base_threads})  RSS base {run.base_rss / MB:.0f} MB peak "
                  f"{run.peak_rss / MB:.0f} MB  RSS/client {run.rss_per_client / 1e3:.1f} KB  server CPU {run.cpu_s:.1f} s  "
                  f"wall {run.wall_s:.0f} s"
                  + (f"  joined {run.joined}, settled RSS {run.joined_rss / MB:.0f} MB, RSS/joined client "
                     f"{run.rss_per_joined / 1e3:.1f} KB ({run.rss_per_joined_after_window / 1e3:.1f} KB after the window), "
                     f"server CPU {run.window_cpu_s:.1f} s in {settings.cpu_window_s:g} s"
                     if settings.joined_only else ""), flush=True)
            print(f"        client side: {fmt_counts(run.counts)}", flush=True)
    small, large = runs[0], runs[-1]
    thread_ratio = large.max_threads / max(1, small.max_threads)
    rows = [[r.clients, settings.sampled, f"{r.rounds_done}/{settings.rounds}",
             " ".join(f"{s:.1f}" for s in r.round_seconds) or "-", f"{r.join_s:.0f}", r.max_threads,
             f"{r.base_rss / MB:.0f}", f"{r.peak_rss / MB:.0f}", f"{r.rss_per_client / 1e3:.1f}", f"{r.cpu_s:.1f}", f"{r.wall_s:.0f}",
             *([f"{r.joined}", f"{r.joined_rss / MB:.0f}", f"{r.rss_per_joined / 1e3:.1f}",
                f"{r.rss_per_joined_after_window / 1e3:.1f}", f"{r.window_cpu_s:.1f}"]
               if settings.joined_only else []),
             fmt_counts(r.counts)] for r in runs]
    ratios = (f"threads({large.clients})/threads({small.clients}) = {thread_ratio:.2f}; RSS/client "
              f"{small.rss_per_client / 1e3:.1f} KB at {small.clients}, {large.rss_per_client / 1e3:.1f} KB at {large.clients} "
              f"(ratio {large.rss_per_client / max(1.0, small.rss_per_client):.2f}); median seconds per round "
              f"{small.median_round_s:.1f} at {small.clients}, {large.median_round_s:.1f} at {large.clients}"
              + (f"; RSS/joined client (no round) {small.rss_per_joined / 1e3:.1f} KB at {small.clients}, "
                 f"{large.rss_per_joined / 1e3:.1f} KB at {large.clients}, each client past {small.clients} "
                 f"{(large.joined_rss - small.joined_rss) / max(1, large.joined - small.joined) / 1e3:.1f} KB"
                 if settings.joined_only else ""))
    print(ratios, flush=True)
    body = (markdown_table(["joined", "sampled/round", "rounds", "seconds per round", "all joined after s", "server threads (max)",
                            "base RSS MB", "peak RSS MB", "RSS/client KB", "server CPU s", "wall s",
                            *(["registered", "settled RSS MB", "RSS/joined client KB", "RSS/joined client after the window KB",
                               f"server CPU s in {settings.cpu_window_s:g} s, all joined"] if settings.joined_only else []),
                            "client-side counts"], rows)
            + f"\n\n{ratios}\n\n## Server log tails\n\n"
            + "\n".join(f"- {r.clients} joined: exit {r.server_exit}: `{' / '.join(r.log_tail)[-300:]}`" for r in runs) + "\n")
    name = "fleet_quick" if args.quick else "fleet_joined" if args.joined_only else "fleet"
    path = write_results(f"{name}_{args.label}" if args.label else name, "Fleet scale: joined clients on one coordinator",
                         command_line(), facts, body, args.out)
    print(f"wrote {path}")
    # the target: threads flat from the small fleet to the large one (1.00 = no growth)
    headline(f"threads({large.clients})/threads({small.clients})", thread_ratio)


if __name__ == "__main__":
    main()
