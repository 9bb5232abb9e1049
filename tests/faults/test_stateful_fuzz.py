"""Issue 14 §1: a stateful fuzz of whole upload streams against a live server.

Three sampled clients send complete, otherwise valid update streams whose header fields,
metrics, n_samples, tensor values and stream shape are fuzzed, interleaved across clients and
rounds. Invariants: no UNKNOWN/INTERNAL, the run never stops because of client input, the
global state does not move while a round is open, and each new state is exactly the old one
plus the weighted mean of the updates that were accepted (so a refused update is in no state).
"""

from __future__ import annotations

import hashlib

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from fedser_shared import codec
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from tests.faults import raw

pytestmark = pytest.mark.timeout(400)
CLIENTS = ("a", "b", "c")
LABELED = 20  # raw.LABELS: the most samples a client may declare
CRASHES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}

u64 = st.one_of(st.integers(0, 30), st.integers(0, 2**64 - 1), st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64 - 1]))
losses = st.one_of(st.floats(0, 10), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1.7e308, -1.0]))
per_class = st.one_of(st.just([]), st.lists(st.integers(0, 3), min_size=4, max_size=4), st.lists(u64, max_size=6))
values = st.one_of(st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32),
                   st.sampled_from([float("nan"), float("inf"), 0.0]))
shapes = st.sampled_from(["whole", "drop_last", "empty_chunk", "flip_byte", "no_trailer", "bad_checksum",
                          "after_trailer", "long_len", "short_len", "two_headers"])
chunks = st.sampled_from([4096, 65536, 1 << 20])
VALID = {"value": st.floats(-1, 1, width=32), "n_samples": st.integers(1, LABELED), "loss": st.floats(0, 10),
         "taken": st.just([1, 0, 2, 0]), "correct": st.just([1, 0, 0, 0]), "with_truth": st.integers(0, 1),
         "candidates": st.just(40), "pass_tau": st.just(3), "pass_kappa": st.just(2), "chunk": chunks, "shape": st.just("whole")}
WILD = {"value": values, "n_samples": u64, "loss": losses, "taken": per_class, "correct": per_class, "with_truth": u64,
        "candidates": u64, "pass_tau": u64, "pass_kappa": u64, "chunk": chunks, "shape": shapes}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stateful")
    # exact aggregation of arbitrary values is what is checked here, not the relative norm bound
    server = raw.start(tmp, **{"federation.rounds": 10_000, "federation.min_clients": len(CLIENTS),
                               "federation.update_norm_relative": 0,
                               "federation.round_timeout_s": 600.0, "federation.eval_every": 10_000})
    channel, stub = raw.stub_for(server.port)
    sessions = {name: raw.join(stub, name).session for name in CLIENTS}
    yield server, stub, sessions
    channel.close()
    server.shutdown(grace_s=0.2)


def _stream(session: pb.Session, task: pb.Task, tensors: dict[str, np.ndarray], n_samples: int, metrics: pb.TrainMetrics,
            chunk: int, shape: str) -> list[pb.UpdateChunk]:
    data = codec.encode(tensors)
    total_len = len(data) + {"long_len": 1, "short_len": -1}.get(shape, 0)
    header = pb.UpdateChunk(header=pb.UpdateHeader(protocol_version=raw.V, session=session, round=task.round, task_id=task.task_id,
                                                   n_samples=n_samples, metrics=metrics, blob=pb.BlobHeader(total_len=total_len)))
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    digest = hashlib.sha256(data).digest()
    if shape == "drop_last":
        chunks = chunks[:-1]
    elif shape == "empty_chunk":
        chunks.insert(1, b"")
    elif shape == "flip_byte":
        chunks[-1] = chunks[-1][:-1] + bytes([chunks[-1][-1] ^ 1])
    elif shape == "bad_checksum":
        digest = bytes(32)
    messages = [header, *(pb.UpdateChunk(data=c) for c in chunks)]
    if shape == "two_headers":
        messages.insert(1, header)
    if shape != "no_trailer":
        messages.append(pb.UpdateChunk(trailer=pb.BlobTrailer(sha256=digest)))
    if shape == "after_trailer":
        messages.append(pb.UpdateChunk(data=b"x"))
    return messages


class UploadMachine(RuleBasedStateMachine):
    live: tuple = ()

    @initialize()
    def open_round(self) -> None:
        self.server, self.stub, self.sessions = self.live
        self.tasks = {name: raw.wait_task(self.stub, s, within_s=60) for name, s in self.sessions.items()}
        rounds = {t.round for t in self.tasks.values()}
        assert len(rounds) == 1, rounds
        self.state = raw.fetch(self.stub, self.sessions["a"], self.tasks["a"])
        self.before = raw.snapshot(self.server)
        self.accepted: dict[str, tuple[float, int]] = {}  # client -> (delta value, n_samples)

    def _submit(self, name: str, messages: list[pb.UpdateChunk]) -> grpc.StatusCode:
        code, details = raw.code_of(lambda: raw.submit(self.stub, messages))
        assert code not in CRASHES, (code, details)
        return code

    def _pending(self) -> list[str]:
        return [name for name in CLIENTS if name not in self.accepted]

    @precondition(lambda self: len(self.accepted) < len(CLIENTS))
    @rule(broken=st.sets(st.sampled_from(sorted(WILD)), max_size=2), data=st.data())
    def fuzzed_upload(self, broken, data) -> None:
        """A valid upload with up to two of its fields drawn wild: deep enough to pass the first checks."""
        name = data.draw(st.sampled_from(self._pending()), label="client")
        field = {key: data.draw(WILD[key] if key in broken else VALID[key], label=key) for key in WILD}
        tensors = raw.update_for(self.state, field["value"])
        metrics = pb.TrainMetrics(loss=field["loss"], pseudo_taken_per_class=field["taken"],
                                  pseudo_correct_per_class=field["correct"], pseudo_with_truth=field["with_truth"],
                                  pseudo_candidates=field["candidates"], pseudo_pass_tau=field["pass_tau"],
                                  pseudo_pass_kappa=field["pass_kappa"])
        messages = _stream(self.sessions[name], self.tasks[name], tensors, field["n_samples"], metrics, field["chunk"], field["shape"])
        code = self._submit(name, messages)
        if code == grpc.StatusCode.OK:
            assert name not in self.accepted, "a second update for one task was accepted"
            self.accepted[name] = (field["value"], field["n_samples"])

    @rule(name=st.sampled_from(CLIENTS), value=st.floats(-1, 1, width=32), n_samples=st.integers(1, LABELED))
    def honest_upload(self, name, value, n_samples) -> None:
        """Also a late one, for a client that already reported: refused as stale."""
        messages = raw.update_messages(self.sessions[name], self.tasks[name], raw.update_for(self.state, value), n_samples=n_samples)
        code = self._submit(name, messages)
        assert (code == grpc.StatusCode.OK) == (name not in self.accepted), code
        if code == grpc.StatusCode.OK:
            self.accepted[name] = (value, n_samples)

    @precondition(lambda self: len(self.accepted) == len(CLIENTS))
    @rule()
    def next_round(self) -> None:
        """Every client has reported: the round closes; the new state holds exactly the accepted updates."""
        expected = self._expected()
        self.open_round()
        for name, value in self.state.items():
            np.testing.assert_allclose(value, expected[name], rtol=1e-6, atol=1e-6)

    def _expected(self) -> dict[str, np.ndarray]:
        total = sum(n for _, n in self.accepted.values())  # empty participations (n_samples 0) weigh nothing
        if total == 0:
            return dict(self.state)
        mean = sum(v * n for v, n in self.accepted.values()) / total
        return {name: (value.astype(np.float64) + mean).astype(np.float32) for name, value in self.state.items()}

    @invariant()
    def the_run_goes_on(self) -> None:
        if not hasattr(self, "server"):
            return
        assert self.server.failure is None and self.server.rounds.is_alive()
        if len(self.accepted) < len(CLIENTS):
            assert raw.snapshot(self.server) == self.before  # nothing moves the model while the round is open

    def teardown(self) -> None:
        # the next example starts on a fresh round: answer for the clients that have not
        if hasattr(self, "server"):
            for name in CLIENTS:
                if name not in self.accepted:
                    self.honest_upload(name, 0.0, 1)
                    self.accepted[name] = (0.0, 1)


def test_whole_upload_streams_with_fuzzed_fields_never_stop_the_run(live) -> None:
    UploadMachine.live = live
    run_state_machine_as_test(UploadMachine, settings=settings(
        max_examples=20, stateful_step_count=15, deadline=None, derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]))
    server = live[0]
    assert server.failure is None and server.coordinator.completed_round >= 1
