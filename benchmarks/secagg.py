"""What secure aggregation costs: round time and bytes per client, against plain FedAvg in the same run.

For each round size (default 10 clients, then 100 with SecAgg+'s neighbour graph of degree 10),
with the default MLP on emobase (286,596 parameters, 1.15 MB as float32):

- `inprocess`: the protocol's work per round split by role: each client (quantise, keys, shares,
  masks, unmasking shares) and the server (relay, sum, rebuild secrets, remove masks, decode,
  fold), against the plain strategy's fold of the same updates.
- `grpc`: whole rounds over loopback gRPC, as deployed: a `fedser-server serve` process and the
  clients in processes of their own (benchmarks/_secagg_clients.py), each sending a ready update
  as soon as it gets its task (no training, no model download: the ratio is that of the rounds'
  communication and aggregation alone, the worst case for the protocol's share). Plain and secure
  sessions alternate on the same client processes (plain, secure, plain, secure, ...) so that the
  machine's load weighs on both alike; the round time is the server's (metrics.jsonl
  train_seconds), a session's first round left out. Bytes per client per round: the protobuf
  payload of every call a client made (Join and polls included), divided by its rounds.

Usage: python benchmarks/secagg.py [--clients 10 100] [--rounds 4] [--pairs 3] [--neighbours 10] [--quick]
Prints `round_time_ratio[secagg/plain] = R` for each round size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "shared")]

from benchmarks._common import free_port  # noqa: E402
from fedser_server.core.secure_aggregation import fold_sum, round_threshold, update_layout  # noqa: E402
from fedser_server.core.strategy import make_strategy  # noqa: E402
from fedser_server.engine.sums import WeightedSums  # noqa: E402
from fedser_shared.config import RunConfig, load_run_config, to_toml  # noqa: E402
from fedser_shared.secagg import RoundSetup, SecAggClient, SecAggServer, bytes_per_client, decode, encode  # noqa: E402
from fedser_shared.weights import initial_weights  # noqa: E402


def updates_for(config: RunConfig, n: int, seed: int = 0) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    strategy = make_strategy("fedavg", 1.0, "paper")
    state = strategy.initial_state(initial_weights(config.feature_dim, config.num_classes, config.model.hidden, 0))
    rng = np.random.default_rng(seed)
    spec = strategy.expected_update(state)
    return state, {f"c{i:03d}": {name: rng.normal(0, 1e-3, t.shape).astype(np.float32) for name, t in spec.items()}
                   for i in range(n)}


def inprocess(config: RunConfig, n: int, repeats: int) -> dict[str, float]:
    state, updates = updates_for(config, n)
    plain, client, server = [], [], []
    for _ in range(repeats):
        strategy = make_strategy("fedavg", 1.0, "paper")
        started = time.perf_counter()
        sums = WeightedSums(strategy, state, n)
        for update in updates.values():
            sums.add(update, 100)
        sums.new_state()
        plain.append(time.perf_counter() - started)

        privacy = config.privacy
        strategy = make_strategy("fedavg", 1.0, "paper")
        sums = WeightedSums(strategy, state, n)
        layout = update_layout(strategy, state, privacy, n)
        t = round_threshold(privacy, n)
        spent = dict.fromkeys(updates, 0.0)
        server_s = 0.0

        def timed(name, call, *args):
            nonlocal server_s
            began = time.perf_counter()
            out = call(*args)
            if name is None:
                server_s += time.perf_counter() - began
            else:
                spent[name] += time.perf_counter() - began
            return out

        names = sorted(updates)
        node = {name: i + 1 for i, name in enumerate(names)}
        machine = SecAggServer(n, t, privacy.secagg_neighbours, 1, b"bench", layout.length)
        clients = {name: SecAggClient(RoundSetup(node[name], t, b"bench", layout.length)) for name in names}
        rng = np.random.default_rng(0)
        inputs = {name: timed(name, encode, updates[name], 100, layout, rng) for name in names}
        for name in names:
            advert = timed(name, clients[name].advertise)
            timed(None, machine.receive_advert, node[name], advert)
        peers = timed(None, machine.close_advertise)
        for name in names:
            timed(None, machine.receive_shares, node[name], timed(name, clients[name].share_keys, peers[node[name]]))
        forwarded = timed(None, machine.close_shares)
        for name in names:
            masked = timed(name, clients[name].masked_input, inputs[name], forwarded[node[name]])
            timed(None, machine.receive_masked, node[name], masked)
        asks = timed(None, machine.close_masked)
        for name in names:
            timed(None, machine.receive_unmask, node[name], timed(name, clients[name].unmask, asks[node[name]]))
        result = timed(None, machine.finish)
        began = time.perf_counter()
        fold_sum(sums, decode(result.total, layout, len(result.survivors)))
        sums.new_state()
        server_s += time.perf_counter() - began
        client.append(statistics.median(spent.values()))
        server.append(server_s)
    neighbours = n - 1 if config.privacy.secagg_neighbours is None else min(config.privacy.secagg_neighbours, n - 1)
    traffic = bytes_per_client(layout.length, neighbours)
    return {"plain_server_s": statistics.median(plain), "secure_client_s": statistics.median(client),
            "secure_server_s": statistics.median(server), "bytes_sent": traffic.sent, "bytes_received": traffic.received,
            "plain_bytes_sent": sum(v.nbytes for v in next(iter(updates.values())).values())}


def server_config(config: RunConfig, n: int, rounds: int, secure: bool) -> RunConfig:
    return config.model_copy(update={
        "federation": config.federation.model_copy(update={"rounds": rounds, "min_clients": n, "fraction": 1.0,
                                                           "eval_every": 10_000, "poll_timeout_s": 5.0,
                                                           "round_timeout_s": 120.0}),
        "privacy": config.privacy.model_copy(update={"secure_aggregation": "secagg+" if secure else "off"})})


class ClientProcesses:
    """The benchmark's clients, `per_process` to a process (benchmarks/_secagg_clients.py), alive across sessions."""

    def __init__(self, n: int, per_process: int, neighbours: int | None) -> None:
        script = str(ROOT / "benchmarks" / "_secagg_clients.py")
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'shared'}", "OMP_NUM_THREADS": "1"}
        self.procs = [subprocess.Popen([sys.executable, script, str(first), str(min(per_process, n - first)),
                                        str(neighbours or "all")], env=env, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
                      for first in range(0, n, per_process)]
        for proc in self.procs:
            assert proc.stdout is not None and json.loads(proc.stdout.readline())["ready"]

    def start_session(self, target: str, secure: bool) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"target": target, "secure": secure}) + "\n")
            proc.stdin.flush()

    def end_session(self) -> dict[str, Any]:
        """The clients' payload bytes, rounds, and seconds spent in each method's calls, summed over processes."""
        totals: dict[str, Any] = {"sent": 0, "received": 0, "client_rounds": 0, "seconds": {}}
        for proc in self.procs:
            assert proc.stdout is not None
            report = json.loads(proc.stdout.readline())
            for key in ("sent", "received", "client_rounds"):
                totals[key] += report[key]
            for method, seconds in report["seconds"].items():
                totals["seconds"][method] = totals["seconds"].get(method, 0.0) + seconds
        return totals

    def close(self) -> None:
        """End of input: each process exits; one that is still there after a minute (a very busy box) is killed."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        deadline = time.monotonic() + 60
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def session(config: RunConfig, clients: ClientProcesses, n: int, rounds: int, secure: bool) -> tuple[list[float], dict[str, Any]]:
    """One run of `rounds` rounds on a fresh `fedser-server serve`: each round's time, and the clients' payload bytes."""
    config = server_config(config, n, rounds, secure)
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "run.toml"
        toml.write_text(to_toml(config))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "fedser_server.cli", "serve", "--state-dir", f"{tmp}/state",
                                   "--address", f"127.0.0.1:{port}", "--config", str(toml), "--insecure", "--open-enrolment",
                                   "--log-level", "warning"],
                                  env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'shared'}", "OMP_NUM_THREADS": "1"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            clients.start_session(f"127.0.0.1:{port}", secure)
            metrics = Path(tmp) / "state" / "metrics.jsonl"
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and server.poll() is None:
                if metrics.exists() and len(metrics.read_text().splitlines()) >= rounds:
                    break
                time.sleep(0.1)
            lines = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
            traffic = clients.end_session()  # the clients hear SHUTDOWN after the last round
        finally:
            server.terminate()
            server.wait(30)
    if len(lines) < rounds:
        raise SystemExit(f"the {'secure' if secure else 'plain'} session ended after {len(lines)} of {rounds} rounds")
    return [float(line["train_seconds"]) for line in lines], traffic


def interleaved(config: RunConfig, n: int, rounds: int, pairs: int, per_process: int) -> None:
    """Plain and secure sessions in turn (plain, secure, plain, secure, ...) on the same client processes,
    so that the machine's load weighs on both alike. A session's first round (connections, first
    allocations) is left out of the medians."""
    neighbours = config.privacy.secagg_neighbours
    clients = ClientProcesses(n, per_process, neighbours)
    times: dict[bool, list[float]] = {False: [], True: []}
    traffic: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    try:
        for pair in range(pairs):
            for secure in (False, True):
                rounds_s, payload = session(config, clients, n, rounds, secure)
                times[secure] += rounds_s[1:]
                traffic[secure].append(payload)
                print(f"grpc {n} clients pair {pair + 1} {'secure' if secure else 'plain '} rounds_s = "
                      f"{[round(s, 3) for s in rounds_s]} load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        clients.close()
    median = {secure: statistics.median(times[secure]) for secure in times}
    for secure in (False, True):
        client_rounds = sum(t["client_rounds"] for t in traffic[secure])
        sent = sum(t["sent"] for t in traffic[secure]) / client_rounds
        received = sum(t["received"] for t in traffic[secure]) / client_rounds
        print(f"grpc {n} clients {'secure' if secure else 'plain'} round_s = {median[secure]:.3f} (median of "
              f"{len(times[secure])} rounds); bytes per client per round sent = {sent:.0f}, received = {received:.0f}")
        methods = sorted({m for t in traffic[secure] for m in t["seconds"]})
        per_call = {m: round(sum(t["seconds"].get(m, 0.0) for t in traffic[secure]) / client_rounds, 3) for m in methods}
        print(f"grpc {n} clients {'secure' if secure else 'plain'} seconds per client per round in each call "
              f"(a stage call returns when its stage closed): {per_call}")
    print(f"round_time_ratio[secagg/plain] = {median[True] / median[False]:.2f} ({n} clients, neighbours "
          f"{neighbours or 'all'}, {-(-n // per_process)} client processes)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100],
                        help="round sizes to measure, one after the other (default: 10 100)")
    parser.add_argument("--neighbours", type=int, default=10,
                        help="SecAgg+ neighbour degree for rounds of more clients than this (default 10)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per session (the first is left out)")
    parser.add_argument("--pairs", type=int, default=3, help="plain/secure session pairs per round size")
    parser.add_argument("--per-process", type=int, default=1, help="clients per client process (default 1)")
    parser.add_argument("--quick", action="store_true", help="2 pairs of 3-round sessions, the in-process split once")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.pairs = 3, 2
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores", flush=True)
    for n in args.clients:
        config = load_run_config(None, {"privacy.secagg_neighbours": args.neighbours if n > args.neighbours + 1 else None})
        print(f"--- {n} clients, neighbours {config.privacy.secagg_neighbours or 'all'}, model "
              f"{sum(v.nbytes for v in updates_for(config, 1)[1]['c000'].values()) / 1e6:.2f} MB", flush=True)
        figures = inprocess(config, n, 1 if args.quick or n > 20 else 3)
        print(f"inprocess {n} clients plain_fold_s = {figures['plain_server_s']:.3f}")
        print(f"inprocess {n} clients secure_client_s = {figures['secure_client_s']:.3f} (one client's protocol work)")
        print(f"inprocess {n} clients secure_server_s = {figures['secure_server_s']:.3f}")
        print(f"protocol bytes_per_client sent = {figures['bytes_sent']} (plain update {figures['plain_bytes_sent']}), "
              f"received = {figures['bytes_received']} besides the model", flush=True)
        interleaved(config, n, args.rounds, args.pairs, args.per_process)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
