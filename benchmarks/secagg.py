"""What secure aggregation costs: round time and bytes per client, against plain FedAvg in the same run.

Two measurements, both with the default MLP on emobase (286,596 parameters, 1.1 MB as float32):

- `inprocess`: the protocol's work per round split by role: each client (quantise, keys, shares,
  masks, unmasking shares) and the server (relay, sum, rebuild secrets, remove masks, decode,
  fold), against the plain strategy's fold of the same updates. Clients run in parallel in a
  real deployment, so a round's added time is about one client's share plus the server's.
- `grpc`: whole rounds over loopback gRPC, a `fedser-server serve` process and N clients on
  threads of this process that send a ready update as soon as they get their task (no
  training: the ratio is that of the rounds' communication and aggregation alone, the worst case).

Usage: python benchmarks/secagg.py [--clients 10] [--rounds 4] [--neighbours K] [--quick]
Prints one line per figure and the ratios secure / plain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "shared")]

from benchmarks._common import free_port  # noqa: E402
from fedser_client.transport.secure import submit_securely  # noqa: E402
from fedser_server.core.secure_aggregation import fold_sum, round_threshold, update_layout  # noqa: E402
from fedser_server.core.strategy import make_strategy  # noqa: E402
from fedser_server.engine.sums import WeightedSums  # noqa: E402
from fedser_shared import PROTOCOL_VERSION, codec  # noqa: E402
from fedser_shared.config import RunConfig, load_run_config, to_toml  # noqa: E402
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb  # noqa: E402
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc  # noqa: E402
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


def _client_loop(target: str, name: str, update: dict[str, np.ndarray], config: RunConfig, secure: bool,
                 stop: threading.Event) -> None:
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 16 << 20),
                                                     ("grpc.max_receive_message_length", 16 << 20)])
    stub = pb_grpc.CoordinatorStub(channel)
    session = stub.Join(pb.JoinRequest(protocol_version=PROTOCOL_VERSION, name=name, feature_name="emobase",
                                       feature_dim=988, label_counts=[100, 100, 100, 100]), timeout=120,
                        wait_for_ready=True).session
    blob = codec.encode(update)
    while not stop.is_set():
        try:
            task = stub.GetTask(pb.GetTaskRequest(protocol_version=PROTOCOL_VERSION, session=session), timeout=30)
            if task.kind == pb.TASK_KIND_SHUTDOWN:
                return
            if task.kind != pb.TASK_KIND_TRAIN:
                continue
            if secure:
                submit_securely(stub, session, task, config, update, 100, np.random.default_rng())
                continue
            header = pb.UpdateHeader(protocol_version=PROTOCOL_VERSION, session=session, round=task.round,
                                     task_id=task.task_id, n_samples=100, metrics=pb.TrainMetrics(loss=1.0),
                                     blob=pb.BlobHeader(total_len=len(blob)))

            def stream(header=header):
                yield pb.UpdateChunk(header=header)
                for start in range(0, len(blob), 1 << 20):
                    yield pb.UpdateChunk(data=blob[start : start + (1 << 20)])
                yield pb.UpdateChunk(trailer=pb.BlobTrailer(sha256=hashlib.sha256(blob).digest()))

            stub.SubmitUpdate(stream(), timeout=60)
        except grpc.RpcError:
            time.sleep(0.2)
    channel.close()


def over_grpc(config: RunConfig, n: int, rounds: int, secure: bool) -> list[float]:
    config = config.model_copy(update={
        "federation": config.federation.model_copy(update={"rounds": rounds, "min_clients": n, "fraction": 1.0,
                                                           "eval_every": 10_000, "poll_timeout_s": 5.0}),
        "privacy": config.privacy.model_copy(update={"secure_aggregation": "secagg+" if secure else "off"})})
    _, updates = updates_for(config, n)
    with tempfile.TemporaryDirectory() as tmp:
        toml = Path(tmp) / "run.toml"
        toml.write_text(to_toml(config))
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "fedser_server.cli", "serve", "--state-dir", f"{tmp}/state",
                                   "--address", f"127.0.0.1:{port}", "--config", str(toml), "--insecure", "--open-enrolment",
                                   "--log-level", "warning"],
                                  env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'shared'}"}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 120
            target = f"127.0.0.1:{port}"
            stop = threading.Event()
            threads = [threading.Thread(target=_client_loop, args=(target, name, update, config, secure, stop), daemon=True)
                       for name, update in updates.items()]
            for thread in threads:
                thread.start()
            metrics = Path(tmp) / "state" / "metrics.jsonl"
            while time.monotonic() < deadline + 600 and server.poll() is None:
                if metrics.exists() and len(metrics.read_text().splitlines()) >= rounds:
                    break
                time.sleep(0.2)
            stop.set()
            lines = [json.loads(line) for line in metrics.read_text().splitlines()]
        finally:
            server.terminate()
            server.wait(30)
    return [float(line["train_seconds"]) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--neighbours", type=int, default=None, help="SecAgg+ neighbour degree (default: every client)")
    parser.add_argument("--quick", action="store_true", help="in-process figures only")
    args = parser.parse_args()
    config = load_run_config(None, {"privacy.secagg_neighbours": args.neighbours})
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.clients} clients, "
          f"neighbours {args.neighbours or 'all'}, "
          f"model {sum(v.nbytes for v in updates_for(config, 1)[1]['c000'].values()) / 1e6:.2f} MB")
    figures = inprocess(config, args.clients, 3 if args.clients <= 20 else 1)
    added = figures["secure_client_s"] + figures["secure_server_s"]
    print(f"inprocess plain_fold_s = {figures['plain_server_s']:.3f}")
    print(f"inprocess secure_client_s = {figures['secure_client_s']:.3f} (one client's protocol work)")
    print(f"inprocess secure_server_s = {figures['secure_server_s']:.3f}")
    print(f"inprocess secure_over_plain_aggregation = {added / figures['plain_server_s']:.1f}x")
    print(f"bytes_per_client sent = {figures['bytes_sent']} (plain update {figures['plain_bytes_sent']}), "
          f"received = {figures['bytes_received']} besides the model")
    if args.quick:
        return
    plain = over_grpc(config, args.clients, args.rounds, secure=False)
    secure = over_grpc(config, args.clients, args.rounds, secure=True)
    print(f"grpc plain round_s = {statistics.median(plain[1:] or plain):.3f} (rounds {[round(s, 3) for s in plain]})")
    print(f"grpc secure round_s = {statistics.median(secure[1:] or secure):.3f} (rounds {[round(s, 3) for s in secure]})")
    print(f"grpc round_time_ratio[secagg/plain] = {statistics.median(secure[1:] or secure) / statistics.median(plain[1:] or plain):.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
