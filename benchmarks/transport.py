"""Transport benchmark: fedser's model streams against bare grpcio and a raw loopback socket.

For each payload size, in one run and interleaved rep by rep (the box is shared, so only
same-run ratios mean anything):

  (a) raw TCP   the same bytes through a loopback socket between two processes (the physical limit)
  (b) bare grpc a grpcio stream of the same bytes in 1 MiB chunks, identity serialisers, no fedser code
  (c) fedser    FetchModel (down) and SubmitUpdate (up) of a real fedser server process for a SCAFFOLD
                model whose state (w.* + c.*) is that size; the client side is the client daemon's
                own code: header, XXH3-128 check while receiving, parse; on the way up the update
                streamed from its tensors with XXH3-128 in the trailer, until the server's ack, which
                comes after its checksum, layout and finiteness checks and parking the update on
                disk (adding it to the running sums follows the ack, before the round closes);
                each round's transfers are timed once the previous round's checkpoint is on disk
                (its disk write is round time, counted by vs_flower.py, not transport)

    python benchmarks/transport.py                 # 1, 64, 256 MB
    python benchmarks/transport.py --quick         # < 1 minute
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    MALLOC_ENV,
    MB,
    MIB,
    command_line,
    free_port,
    headline,
    machine_facts,
    markdown_table,
    payload,
    python_child,
    reexec_with_malloc_env,
    stop,
    wait_for_port,
    write_results,
)

BARE_DOWN = "/bench.Bare/Down"
BARE_UP = "/bench.Bare/Up"
_identity = None  # grpc passes bytes through when no serialiser is given


# ------------------------------------------------------------------ (a) raw socket
def _raw_server(port: int) -> None:
    """Receive length-prefixed blobs into a preallocated buffer over one kept connection; ack each with one byte."""
    buffer = bytearray()
    with socket.create_server(("127.0.0.1", port)) as listener:
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while (head := conn.recv(8, socket.MSG_WAITALL)) and len(head) == 8:
                    (size,) = struct.unpack("<Q", head)
                    if len(buffer) != size:
                        buffer = bytearray(size)
                    view, got = memoryview(buffer), 0
                    while got < size:
                        n = conn.recv_into(view[got:], min(size - got, 4 * MIB))
                        if n == 0:
                            return
                        got += n
                    conn.sendall(b"k")


class RawClient:
    def __init__(self, port: int) -> None:
        self.conn = socket.create_connection(("127.0.0.1", port))
        self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> float:
        started = time.perf_counter()
        self.conn.sendall(struct.pack("<Q", len(data)))
        self.conn.sendall(memoryview(data))
        if self.conn.recv(1) != b"k":
            raise RuntimeError("raw receiver did not acknowledge")
        return time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


# ------------------------------------------------------------------ (b) bare grpcio
def _bare_server(port: int, chunk_size: int) -> None:
    cache: dict[int, list[bytes]] = {}

    def chunks_of(size: int) -> list[bytes]:
        if size not in cache:
            data = payload(size)
            cache.clear()
            cache[size] = [data[i : i + chunk_size] for i in range(0, size, chunk_size)]
        return cache[size]

    def down(request: bytes, context: grpc.ServicerContext):
        yield from chunks_of(struct.unpack("<Q", request)[0])

    def up(request_iterator, context: grpc.ServicerContext) -> bytes:
        return struct.pack("<Q", sum(len(chunk) for chunk in request_iterator))

    handler = grpc.method_handlers_generic_handler("bench.Bare", {
        "Down": grpc.unary_stream_rpc_method_handler(down),
        "Up": grpc.stream_unary_rpc_method_handler(up),
    })
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


class BareClient:
    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.down_call = self.channel.unary_stream(BARE_DOWN)
        self.up_call = self.channel.stream_unary(BARE_UP)

    def down(self, size: int) -> float:
        started = time.perf_counter()
        got = sum(len(chunk) for chunk in self.down_call(struct.pack("<Q", size), timeout=600))
        elapsed = time.perf_counter() - started
        assert got == size, (got, size)
        return elapsed

    def up(self, chunks: list[bytes]) -> float:
        started = time.perf_counter()
        got = struct.unpack("<Q", self.up_call(iter(chunks), timeout=600))[0]
        elapsed = time.perf_counter() - started
        assert got == sum(len(c) for c in chunks)
        return elapsed

    def close(self) -> None:
        self.channel.close()


# ------------------------------------------------------------------ (c) fedser
def hidden_for(state_bytes: int, feature_dim: int = 988, classes: int = 4) -> int:
    """Width h of a D->h->h->C MLP whose SCAFFOLD state (weights + control variate, float32) is ~state_bytes."""
    params = state_bytes / 8
    b = feature_dim + 2 + classes
    return max(1, int((-b + (b * b + 4 * (params - classes)) ** 0.5) / 2))


class FedserEndpoint:
    """A real fedser server process (one client, one update per round) and the daemon's client code."""

    def __init__(self, state_bytes: int, workdir: Path) -> None:
        from fedser_client.local_store import LocalStore
        from fedser_client.transport.daemon import ClientDaemon, ClientIdentity
        from fedser_shared.config import load_run_config, to_toml

        hidden = hidden_for(state_bytes)
        config = load_run_config(None, {
            "model.hidden": [hidden, hidden], "federation.algorithm": "scaffold", "federation.rounds": 100_000,
            "federation.min_clients": 1, "federation.fraction": 1.0, "federation.eval_every": 100_000,
            "federation.poll_timeout_s": 5.0,
        })
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "run.toml").write_text(to_toml(config))
        self.port = free_port()
        self.server = python_child(
            ["-m", "fedser_server.cli", "serve", "--address", f"127.0.0.1:{self.port}", "--state-dir", str(workdir / "server"),
             "--config", str(workdir / "run.toml"), "--insecure", "--log-level", "warning"],
            stdout=open(workdir / "server.log", "w"), stderr=open(workdir / "server.err", "w"))
        wait_for_port(self.port, self.server)
        self.state_dir = workdir / "server"
        (workdir / "client").mkdir(exist_ok=True)
        identity = ClientIdentity(name="bench", feature_name="emobase", feature_dim=988, label_counts=[10, 10, 10, 10],
                                  n_unlabeled=0, n_eval=0)
        self.daemon = ClientDaemon(f"127.0.0.1:{self.port}", identity, lambda _config: None, LocalStore(workdir / "client"), [],
                                   connect_timeout_s=60)
        self.daemon._join()
        self.update: dict[str, np.ndarray] | None = None
        self.state_bytes = 0

    def _train_task(self):
        from fedser_client.transport.daemon import CHECKSUMS_CHECKED
        from fedser_shared import PROTOCOL_VERSION
        from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb

        while True:
            task = self.daemon.stub.GetTask(pb.GetTaskRequest(protocol_version=PROTOCOL_VERSION, session=self.daemon.session,
                                                              checksums=CHECKSUMS_CHECKED), timeout=60)
            if task.kind == pb.TASK_KIND_TRAIN:
                return task

    def _await_checkpoint(self, round_index: int) -> None:
        """Until the round's checkpoint is on disk (progress.json is written last). The server acks
        no update before the round it builds on is durable, and a 64 MB checkpoint takes this box's
        disk 0.2-0.35 s (write + fsync): that is round time (vs_flower.py counts it), not transport."""
        from fedser_server.state.layout import PROGRESS_FILE

        progress, deadline = self.state_dir / PROGRESS_FILE, time.monotonic() + 60
        while round_index > 0 and time.monotonic() < deadline:
            try:
                if json.loads(progress.read_text())["completed_round"] >= round_index:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.005)
        if round_index > 0:
            raise TimeoutError(f"round {round_index}'s checkpoint did not appear")

    def round_trip(self) -> tuple[float, float]:
        """One round: FetchModel (timed), then SubmitUpdate of a pre-made update (timed)."""
        from fedser_client.core.trainer import TrainReport
        from fedser_shared.tensor_names import CONTROL, DELTA, DELTA_CONTROL, WEIGHT
        from fedser_shared.train_metrics import TrainMetrics

        task = self._train_task()
        self._await_checkpoint(task.round - 1)
        started = time.perf_counter()
        state = self.daemon._fetch_model(task)
        down = time.perf_counter() - started
        if self.update is None:  # made once, outside the timings: training is not the transport's cost
            rng = np.random.default_rng(1)
            self.update = {}
            for name, value in state.items():
                prefix = DELTA if name.startswith(WEIGHT) else DELTA_CONTROL
                stem = name[len(WEIGHT if name.startswith(WEIGHT) else CONTROL):]
                self.update[prefix + stem] = (rng.standard_normal(value.shape, dtype=np.float32) * 1e-3)
            self.state_bytes = sum(v.nbytes for v in state.values())
        report = TrainReport(TrainMetrics(n_samples=10, loss=0.0, n_labeled=10, local_steps=1))
        started = time.perf_counter()
        self.daemon.submit_update(task, self.update, report)
        up = time.perf_counter() - started
        return down, up

    def close(self) -> None:
        self.daemon.stop()
        self.daemon.channel.close()
        stop(self.server)


# ------------------------------------------------------------------ driver
def measure(sizes_mb: list[float], reps: int, workdir: Path, chunk_size: int) -> list[dict[str, float]]:
    raw_port, bare_port = free_port(), free_port()
    raw = python_child([__file__, "_raw", str(raw_port)])
    bare = python_child([__file__, "_bare", str(bare_port), str(chunk_size)])
    rows = []
    try:
        wait_for_port(raw_port, raw)
        wait_for_port(bare_port, bare)
        bare_client, raw_client = BareClient(bare_port), RawClient(raw_port)
        for size_mb in sizes_mb:
            fedser = FedserEndpoint(int(size_mb * MB), workdir / f"fedser-{size_mb:g}MB")
            try:
                fedser.round_trip()  # warm-up: connections, allocator, the update
                size = fedser.state_bytes  # measure every path with exactly fedser's state size
                data = payload(size)
                chunks = [data[i : i + chunk_size] for i in range(0, size, chunk_size)]
                bare_client.down(size)
                raw_client.send(data)
                times: dict[str, list[float]] = {k: [] for k in ("raw", "bare_down", "bare_up", "fedser_down", "fedser_up")}
                for _ in range(reps):
                    times["raw"].append(raw_client.send(data))
                    times["bare_down"].append(bare_client.down(size))
                    times["bare_up"].append(bare_client.up(chunks))
                    down, up = fedser.round_trip()
                    times["fedser_down"].append(down)
                    times["fedser_up"].append(up)
            finally:
                fedser.close()
            row = {"size_mb": size / MB}
            row.update({k: size / MB / float(np.median(v)) for k, v in times.items()})  # MB/s
            rows.append(row)
            print(f"{size / MB:8.1f} MB  raw {row['raw']:7.0f}  bare down {row['bare_down']:6.0f} up {row['bare_up']:6.0f}  "
                  f"fedser down {row['fedser_down']:6.0f} up {row['fedser_up']:6.0f} MB/s", flush=True)
        bare_client.close()
        raw_client.close()
    finally:
        stop(raw)
        stop(bare)
    return rows


def report(rows: list[dict[str, float]], reps: int, chunk_size: int) -> str:
    table = markdown_table(
        ["payload MB", "raw TCP MB/s", "bare grpc down", "bare grpc up", "fedser FetchModel", "fedser SubmitUpdate",
         "c/b down", "c/b up", "c/a down", "c/a up"],
        [[f"{r['size_mb']:.1f}", f"{r['raw']:.0f}", f"{r['bare_down']:.0f}", f"{r['bare_up']:.0f}", f"{r['fedser_down']:.0f}",
          f"{r['fedser_up']:.0f}", f"{r['fedser_down'] / r['bare_down']:.2f}", f"{r['fedser_up'] / r['bare_up']:.2f}",
          f"{r['fedser_down'] / r['raw']:.2f}", f"{r['fedser_up'] / r['raw']:.2f}"] for r in rows])
    return (f"Throughput in MB/s (10^6 bytes per second), median of {reps} interleaved reps; chunks of "
            f"{chunk_size // 1024} KiB. (a) raw TCP = loopback socket between two processes; (b) bare grpc = grpcio "
            f"stream with identity serialisers; (c) fedser = the real server process and the client daemon's code, "
            f"down including the XXH3-128 check and parse, up until the server's ack: streamed encode and XXH3-128 on "
            f"the client, the server's checksum, layout and finiteness checks and parking the update on disk (adding it "
            f"to the sums follows the ack, before the round closes); timed once the previous round's checkpoint is on "
            f"disk.\n\n{table}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,64,256", help="payload sizes in MB, comma-separated")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--chunk-kib", type=int, default=1024, help="bare grpcio chunk size (fedser uses codec.CHUNK_SIZE)")
    parser.add_argument("--quick", action="store_true", help="1 and 16 MB, 3 reps (< 1 minute)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--no-malloc-env", action="store_true", help="run without MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_")
    args = parser.parse_args()
    reexec_with_malloc_env(not args.no_malloc_env)
    sizes = [1.0, 16.0] if args.quick else [float(s) for s in args.sizes.split(",")]
    reps = 3 if args.quick else args.reps
    chunk_size = args.chunk_kib * 1024
    from fedser_shared.logging import configure_logging

    configure_logging("warning")
    facts = machine_facts()
    facts["allocator"] = "glibc defaults" if args.no_malloc_env else " ".join(f"{k}={v}" for k, v in MALLOC_ENV.items()) + " (all processes)"
    with tempfile.TemporaryDirectory(prefix="fedser-transport-") as tmp:
        rows = measure(sizes, reps, Path(tmp), chunk_size)
    path = write_results("transport_quick" if args.quick else "transport", "Transport: fedser vs bare grpcio vs raw TCP",
                         command_line(), facts, report(rows, reps, chunk_size), args.out)
    print(f"wrote {path}")
    largest = rows[-1]
    headline("fedser/bare_grpc", min(largest["fedser_down"] / largest["bare_down"], largest["fedser_up"] / largest["bare_up"]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_raw":
        _raw_server(int(sys.argv[2]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_bare":
        _bare_server(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
