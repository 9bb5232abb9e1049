"""A client's own cost per round, training aside: what the daemon does between receiving a task
and having sent its update (parse the task, check the inline model, load c_i and the pool, encode
and frame the update, save the new local state).

The real `ClientDaemon._train` runs in a loop on tasks framed as the server frames them (the
emobase [256, 128] model inline, 1.1 MB, and under SCAFFOLD its control variate too); the trainer
hands back a pre-made update and a new local state, and the update is taken by a stand-in for the
channel, so that only the client's own work is timed. CPU seconds of the thread are what the round
holds the GIL for (an fsync waits without it).

    python benchmarks/client_round.py                   # FedAvg and SCAFFOLD, 300 rounds each
    python benchmarks/client_round.py --rounds 2000     # longer, e.g. under py-spy
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fedser_client.core.state import LocalState
from fedser_client.core.trainer import TrainReport
from fedser_client.local_store import LocalStore
from fedser_client.transport.daemon import ClientDaemon, ClientIdentity, DaemonResult
from fedser_server.core.strategy import FedAvg, Scaffold
from fedser_shared import PROTOCOL_VERSION, codec, wire
from fedser_shared.checksum import Checksum
from fedser_shared.config import load_run_config
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.tensor_names import CONTROL, DELTA, DELTA_CONTROL, WEIGHT
from fedser_shared.train_metrics import TrainMetrics
from fedser_shared.weights import initial_weights

HIDDEN = [256, 128]
FEATURE_DIM, CLASSES = 988, 4
PATHS = [f"audio/clip_{i}.wav" for i in range(200)]


class PreparedTrainer:
    """Hands back the same update each round and a new local state, as a trainer would: c_i+ as
    new arrays under SCAFFOLD, the participation count one up."""

    def __init__(self, update: dict[str, np.ndarray], control: dict[str, np.ndarray]) -> None:
        self.update, self.control = update, control

    def train(self, global_state, task, local_state: LocalState):
        control = {name: value + np.float32(1e-3) for name, value in self.control.items()}
        report = TrainReport(TrainMetrics(n_samples=len(PATHS), loss=0.5, n_labeled=len(PATHS), local_steps=4))
        return self.update, replace(local_state, control=control, participations=local_state.participations + 1), report


class TakenUpdates:
    """Stands for the channel's update calls: takes every message (a stream is read to its end)."""

    def __init__(self) -> None:
        self.bytes_taken = 0

    def submit_small_update(self, message: bytes, timeout: float) -> None:
        self.bytes_taken += len(message)

    def submit_update(self, messages, timeout: float) -> None:
        for message in messages:
            self.bytes_taken += len(message) if isinstance(message, bytes) else message.ByteSize()


def task_bytes(state: dict[str, np.ndarray], round_index: int) -> bytes:
    data = codec.encode(state)
    header = pb.BlobHeader(total_len=len(data), xxh3_128=Checksum.XXH3_128.of(data))
    return pb.Task(kind=pb.TASK_KIND_TRAIN, round=round_index, task_id=f"task-{round_index}",
                   train=pb.TrainSpec(lr=0.05, local_epochs=1), model=pb.InlineBlob(header=header, data=data)).SerializeToString()


def run(algorithm: str, rounds: int, workdir: Path) -> tuple[list[float], list[float]]:
    strategy = Scaffold() if algorithm == "scaffold" else FedAvg()
    state = {k: np.asarray(v) for k, v in strategy.initial_state(initial_weights(FEATURE_DIM, CLASSES, HIDDEN, 0)).items()}
    update = {(DELTA_CONTROL if k.startswith(CONTROL) else DELTA) + k.split(".", 1)[1]: np.full_like(v, 1e-3)
              for k, v in state.items()}
    control = {k: np.zeros_like(v) for k, v in state.items() if k.startswith(CONTROL)}
    assert all(k.startswith((WEIGHT, CONTROL)) for k in state)
    config = load_run_config(None, {"model.hidden": HIDDEN, "federation.algorithm": algorithm})
    identity = ClientIdentity(name="c0", feature_name="emobase", feature_dim=FEATURE_DIM, label_counts=[50] * 4,
                              n_unlabeled=0, n_eval=0)
    trainer = PreparedTrainer(update, control)
    daemon = ClientDaemon("127.0.0.1:9", identity, lambda _config: trainer, LocalStore(workdir / algorithm), PATHS)
    daemon.config, daemon.trainer = config, trainer
    daemon.session = pb.Session(client_id="c0", session_token="t" * 32)
    taken = TakenUpdates()
    daemon.bulk = taken  # type: ignore[assignment]
    result = DaemonResult()
    raw = [task_bytes(state, r) for r in range(4)]  # a few distinct tasks, each received anew (bytes(), as grpc hands them)
    wall, cpu = [], []
    try:
        for r in range(rounds):
            message = bytes(bytearray(raw[r % len(raw)]))
            w0, c0 = time.perf_counter(), time.thread_time()
            daemon._train(wire.read_task(message), result)
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
    finally:
        daemon.channel.close()
    assert len(result.rounds_trained) == rounds and taken.bytes_taken > 0
    assert PROTOCOL_VERSION
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--algorithms", default="fedavg,scaffold")
    parser.add_argument("--dir", type=Path, default=None, help="where the client's data dir goes (default: a temp dir)")
    args = parser.parse_args()
    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # the daemon's default: warnings
    with tempfile.TemporaryDirectory(prefix="fedser-client-round-", dir=args.dir) as tmp:
        for algorithm in args.algorithms.split(","):
            wall, cpu = run(algorithm, args.rounds, Path(tmp))
            skip = min(20, len(wall) // 10)  # the first rounds warm caches
            print(f"{algorithm:8s} rounds {args.rounds}: per round median wall {statistics.median(wall[skip:]) * 1e3:.3f} ms, "
                  f"median CPU {statistics.median(cpu[skip:]) * 1e3:.3f} ms, mean CPU {statistics.mean(cpu[skip:]) * 1e3:.3f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
