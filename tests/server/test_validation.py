"""Every check an update passes before it may touch the global state, over real gRPC."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from tests.faults import raw

pytestmark = pytest.mark.timeout(120)
INVALID, STALE, DENIED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture
def round_open(tmp_path: Path):
    server = raw.start(tmp_path)
    channel, stub = raw.stub_for(server.port)
    session = raw.join(stub, "raw", label_counts=[5, 5, 5, 5], n_unlabeled=3).session
    task = raw.wait_task(stub, session)
    state = raw.fetch(stub, session, task)
    yield server, stub, session, task, state
    channel.close()
    server.shutdown(grace_s=0.2)


def _drop_last(chunks: list[bytes]) -> list[bytes]:
    return chunks[:-1]


def _with_empty(chunks: list[bytes]) -> list[bytes]:
    return [chunks[0], b"", *chunks[1:]]


def _cases(session, task, state):
    good = raw.update_for(state)
    header = raw.update_messages(session, task, good)[0]
    return {
        # 20 labeled + 3 unlabeled declared at join: 24 samples cannot have been trained on
        "implausible_samples": (raw.update_messages(session, task, good, n_samples=24), INVALID, "implausible"),
        "over_size_limit": (raw.update_messages(session, task, good, total_len=10**12), INVALID, "model-derived limit"),
        "truncated": (raw.update_messages(session, task, good, tamper=_drop_last), INVALID, "truncated"),
        "empty_chunk": (raw.update_messages(session, task, good, tamper=_with_empty), INVALID, "non-empty"),
        "two_headers": ([header, header], INVALID, "only non-empty data"),
        "no_header": (raw.update_messages(session, task, good)[1:], INVALID, "header"),
        "stale_round": (raw.update_messages(session, task, good, round_index=task.round + 1), STALE, "has not started"),
        "old_round": (raw.update_messages(session, task, good, round_index=task.round - 1), STALE, "is over"),
        "inf": (raw.update_messages(session, task, {**good, "delta.head.bias": np.full_like(good["delta.head.bias"], np.inf)}),
                INVALID, "infinite"),
    }


@pytest.mark.parametrize("case", ["implausible_samples", "over_size_limit", "truncated", "empty_chunk", "two_headers",
                                  "no_header", "stale_round", "old_round", "inf"])
def test_a_bad_update_is_refused_precisely_and_changes_nothing(round_open, case: str) -> None:
    server, stub, session, task, state = round_open
    before = raw.snapshot(server)
    messages, code, needle = _cases(session, task, state)[case]
    got, details = raw.code_of(lambda: raw.submit(stub, messages))
    assert got == code and needle in details, (got, details)
    assert raw.snapshot(server) == before
    assert sum(server.coordinator.refusals.values()) == 1
    # the client's task is still open: its good update is taken, exactly once
    assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(state), n_samples=23)).accepted
    assert server.wait(timeout=30)
    np.testing.assert_allclose(server.coordinator.state["w.head.bias"], state["w.head.bias"] + 0.01, rtol=1e-6)


def test_a_client_that_is_not_sampled_can_neither_fetch_nor_submit(round_open) -> None:
    server, stub, session, task, state = round_open
    latecomer = raw.join(stub, "late").session  # joined after the round was sampled
    assert raw.code_of(lambda: raw.fetch(stub, latecomer, task))[0] == DENIED
    code, details = raw.code_of(lambda: raw.submit(stub, raw.update_messages(latecomer, task, raw.update_for(state))))
    assert code == DENIED and "not sampled" in details
    assert server.coordinator.refusals["not_participating"] == 1


def test_a_chunk_above_the_grpc_message_limit_is_refused_by_grpc(round_open) -> None:
    server, stub, session, task, state = round_open
    header = raw.update_messages(session, task, raw.update_for(state))[0]
    code, _ = raw.code_of(lambda: raw.submit(stub, [header, pb.UpdateChunk(data=b"\0" * (9 << 20))]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_update_is_accepted_only_once(round_open) -> None:
    server, stub, session, task, state = round_open
    assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(state))).accepted
    code, _ = raw.code_of(lambda: raw.submit(stub, raw.update_messages(session, task, raw.update_for(state))))
    assert code == STALE
    assert server.wait(timeout=30)
    np.testing.assert_allclose(server.coordinator.state["w.head.bias"], state["w.head.bias"] + 0.01, rtol=1e-6)


def test_join_and_evaluation_counts_must_be_plausible(tmp_path: Path) -> None:
    server = raw.start(tmp_path, **{"federation.eval_every": 1})
    channel, stub = raw.stub_for(server.port)
    try:
        for kwargs, needle in [({"label_counts": [2**63, 1, 1, 1]}, "implausible"), ({"n_unlabeled": 2**64 - 1}, "implausible"),
                               ({"name": "x" * 500}, "printable"), ({"name": ""}, "printable"), ({"name": "a\nb"}, "printable")]:
            args = {"name": "j", **kwargs}
            code, details = raw.code_of(lambda a=args: raw.join(stub, **a))
            assert code == INVALID and needle in details, (kwargs, details)
        assert not server.coordinator.registry.clients
        session = raw.join(stub, "evaluator", n_eval=8).session
        task = raw.wait_task(stub, session)
        raw.answer(stub, session, task)
        evaluation = raw.wait_task(stub, session, kind=pb.TASK_KIND_EVALUATE)

        def report(counts):
            return stub.SubmitEvaluation(pb.EvaluationReport(protocol_version=raw.V, session=session, round=evaluation.round,
                                                             task_id=evaluation.task_id, num_classes=4, confusion=counts), timeout=10)

        for counts, needle in [([9] + [0] * 15, "declared 8"), ([2**64 - 1] + [0] * 15, "count above"), ([1] * 9, "4x4"),
                               ([1] * 16, "declared 8")]:
            code, details = raw.code_of(lambda c=counts: report(c))
            assert code == INVALID and needle in details, (counts, details)
        report([2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2])
        assert server.wait(timeout=30)
        assert server.coordinator.history[-1]["uar"] == 1.0
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
