"""A large model's state in files of the state dir (`federation.state_in_memory_max_bytes`): the
same rounds, bit for bit, as in memory; the same checkpoint; nothing left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from fedser_server.core.norm_bound import l2_norm
from fedser_server.core.strategy import FedAvg, Scaffold, Strategy
from fedser_server.engine.served_state import FileBackedState, InMemoryState
from fedser_server.engine.sums import FileSum, WeightedSums
from fedser_server.state.store import StateStore
from fedser_shared import codec
from fedser_shared.config import to_toml
from fedser_shared.tensor_names import WEIGHT
from fedser_shared.weights import initial_weights
from tests.conftest import free_port
from tests.faults import federation, raw

WEIGHTS = initial_weights(988, 4, [300, 200], seed=3)  # ~1.5 MB: several blocks per tensor


def _updates(strategy: Strategy, state: dict[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    return [{name: rng.standard_normal(spec.shape).astype(spec.dtype) for name, spec in strategy.expected_update(state).items()}
            for _ in range(n)]


def _round(strategy: Strategy, served, state: dict[str, np.ndarray], updates: list[dict[str, np.ndarray]]):
    state, _ = served.serve(state)
    sums = WeightedSums(strategy, state, 5, served.sums())
    for i, update in enumerate(updates):
        runs = ((name, start, update[name].reshape(-1)[start : start + 40_000])
                for name in update for start in range(0, update[name].size, 40_000))
        sums.add_runs(runs, n_samples=10 + i, delta_scale=0.5 if i == 1 else 1.0)
    return served.next_round(sums)


@pytest.mark.parametrize("strategy", [FedAvg(0.7), Scaffold(1.0, "paper")], ids=["fedavg", "scaffold"])
def test_a_round_with_its_state_in_files_is_bit_identical_to_one_in_memory(tmp_path: Path, strategy: Strategy) -> None:
    initial = strategy.initial_state(WEIGHTS)
    updates = _updates(strategy, initial, 4)
    layout = codec.BlobLayout(initial)
    in_memory_state, in_memory_blob = _round(strategy, InMemoryState(layout), initial, updates)

    files = FileBackedState(layout, tmp_path / "scratch")
    in_files_state, in_files_blob = _round(strategy, files, initial, updates)

    assert bytes(in_files_blob.data) == bytes(in_memory_blob.data)
    assert in_files_blob.xxh3_128 == in_memory_blob.xxh3_128 and in_files_blob.sha256 == in_memory_blob.sha256
    assert all(np.array_equal(in_files_state[n], in_memory_state[n]) for n in in_memory_state)
    assert list((tmp_path / "scratch").iterdir()) == [], "scratch files are unnamed: nothing to clean up"


def test_the_checkpoint_copied_from_the_file_is_the_one_written_from_memory(tmp_path: Path) -> None:
    strategy = FedAvg()
    initial = strategy.initial_state(WEIGHTS)
    layout = codec.BlobLayout(initial)
    record = {"round": 3, "n_updates": 2}
    state, _ = InMemoryState(layout).serve(initial)
    InMemoryState(layout).checkpoint_of(state)(StateStore(tmp_path / "memory"), 3, record)
    files = FileBackedState(layout, tmp_path / "files" / "scratch")
    state, _ = files.serve(initial)
    files.checkpoint_of(state)(StateStore(tmp_path / "files"), 3, record)

    written = (tmp_path / "files" / "global.safetensors").read_bytes()
    assert written == (tmp_path / "memory" / "global.safetensors").read_bytes()
    with safe_open(str(tmp_path / "files" / "global.safetensors"), framework="numpy") as handle:
        assert handle.metadata()["round"] == "3"
        assert all(np.array_equal(handle.get_tensor(n), initial[n]) for n in initial)


def test_a_sum_in_a_file_keeps_no_pages_of_its_own(tmp_path: Path) -> None:
    total = FileSum(tmp_path, 1 << 20)  # 8 MiB
    total.flat[:] = 1.0
    total.settle(0, total.flat.size)
    assert float(total.flat.sum()) == float(1 << 20), "evicted pages read back from the file"
    assert list(tmp_path.iterdir()) == []


def _resident_bytes_of_mapping_at(address: int) -> int:
    """Rss of the mapping of this process that holds `address` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and head == "Rss:":
            return int(line.split()[1]) * 1024
    raise AssertionError("no mapping holds the address")


def test_the_global_weights_norm_of_a_state_in_files_leaves_none_of_its_pages_resident(tmp_path: Path) -> None:
    strategy = FedAvg()
    initial = strategy.initial_state(WEIGHTS)
    served = FileBackedState(codec.BlobLayout(initial), tmp_path / "scratch")
    state, _ = served.serve(initial)
    address = next(iter(state.values())).ctypes.data

    assert l2_norm(state, WEIGHT) == pytest.approx(l2_norm(initial, WEIGHT), rel=1e-6)
    assert _resident_bytes_of_mapping_at(address) > 1_000_000  # read through the mapping: the model is in
    norm = l2_norm(state, WEIGHT, served.read_done)
    assert norm == pytest.approx(l2_norm(initial, WEIGHT), rel=1e-6)
    # every block read was handed back; what stays is what the kernel mapped in around the last
    # page read of each tensor (fault-around, up to 64 KiB), not the model
    assert _resident_bytes_of_mapping_at(address) <= 64 * 1024 * len(state)


def test_a_federation_with_its_state_in_files_ends_where_one_in_memory_does(tmp_path: Path) -> None:
    def run(where: Path, in_memory_max: int) -> dict[str, np.ndarray]:
        server = raw.start(where, **{"federation.rounds": 2, "federation.state_in_memory_max_bytes": in_memory_max})
        channel, stub = raw.stub_for(server.port)
        try:
            session = raw.join(stub).session
            for _ in range(2):
                assert raw.answer(stub, session, raw.wait_task(stub, session)).accepted
            assert server.wait(timeout=60)
        finally:
            channel.close()
            server.shutdown(grace_s=0.2)
        checkpoint = StateStore(where / "state").load_global()
        assert checkpoint is not None and checkpoint[1] == 2
        return checkpoint[0]

    in_memory = run(tmp_path / "memory", 16 * 2**20)
    in_files = run(tmp_path / "files", 0)
    assert in_memory.keys() == in_files.keys()
    assert all(np.array_equal(in_memory[n], in_files[n]) for n in in_memory)
    scratch = tmp_path / "files" / "state" / "scratch"
    assert scratch.is_dir() and os.listdir(scratch) == []
    assert not (tmp_path / "memory" / "state" / "scratch").exists()


def _leftovers(state_dir: Path) -> list[Path]:
    return [path for folder in ("scratch", "incoming") if (state_dir / folder).exists() for path in (state_dir / folder).iterdir()]


def wait_for_port(port: int, server: subprocess.Popen, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "the server exited before it listened"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def _answer_rounds(port: int, sessions: dict[str, object] | None, rounds: list[int], answering: list[str]) -> dict[str, object]:
    """Join (again, under the same ids) the clients named in `answering` and answer the given rounds."""
    channel, stub = raw.stub_for(port)
    try:
        joined = {name: raw.join(stub, name=name, client_id=sessions[name].client_id if sessions else "").session
                  for name in answering}
        for round_index in rounds:
            for session in joined.values():
                task = raw.wait_task(stub, session, within_s=60)
                assert task.round == round_index
                assert raw.answer(stub, session, task).accepted
        return joined
    finally:
        channel.close()


def test_kill_9_with_the_state_in_files_leaves_nothing_behind_and_resumes_to_the_same_model(tmp_path: Path) -> None:
    overrides = {"federation.rounds": 3, "federation.min_clients": 2, "federation.state_in_memory_max_bytes": 0}
    (tmp_path / "run.toml").write_text(to_toml(raw.small_config(**overrides)))
    port, state_dir = free_port(), tmp_path / "state"
    server = subprocess.Popen([sys.executable, *federation.serve_command(port, state_dir, tmp_path / "run.toml")], stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "server1.log", "w"))
    try:
        wait_for_port(port, server)
        channel, stub = raw.stub_for(port)
        sessions = {name: raw.join(stub, name=name).session for name in ("a", "b")}
        for session in sessions.values():  # round 1, both clients
            assert raw.answer(stub, session, raw.wait_task(stub, session)).accepted
        task = raw.wait_task(stub, sessions["a"])  # round 2: one update folded into the sums, then the crash
        assert task.round == 2 and raw.answer(stub, sessions["a"], task).accepted
        raw.wait_for(lambda: StateStore(state_dir).read_metrics() != [], what="round 1 on disk")
        channel.close()
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
    assert (state_dir / "scratch").is_dir() and _leftovers(state_dir) == []

    resumed = subprocess.Popen([sys.executable, *federation.serve_command(port, state_dir, None)], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server2.log", "w"))
    try:
        wait_for_port(port, resumed)
        _answer_rounds(port, sessions, [2, 3], ["a", "b"])
        assert resumed.wait(timeout=60) == 0, (tmp_path / "server2.log").read_text()[-2000:]
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert _leftovers(state_dir) == []

    reference = raw.start(tmp_path / "uncrashed", **{**overrides, "federation.state_in_memory_max_bytes": 16 * 2**20})
    try:
        _answer_rounds(reference.port, None, [1, 2, 3], ["a", "b"])
        assert reference.wait(timeout=60)
    finally:
        reference.shutdown(grace_s=0.2)
    resumed_state, resumed_round = StateStore(state_dir).load_global()
    expected_state, _ = StateStore(tmp_path / "uncrashed" / "state").load_global()
    assert resumed_round == 3 and [m["round"] for m in StateStore(state_dir).read_metrics()] == [1, 2, 3]
    assert all(np.array_equal(resumed_state[n], expected_state[n]) for n in expected_state), "every round applied exactly once"
