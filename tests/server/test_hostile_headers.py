"""Issue 14 §1: a well-formed update stream whose header carries hostile counts or metrics is
refused with INVALID_ARGUMENT, leaves the model as it was, and cannot stop the run."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from tests.faults import raw

pytestmark = pytest.mark.timeout(120)

HOSTILE = {
    "taken_overflows_int64": pb.TrainMetrics(loss=0.5, pseudo_taken_per_class=[2**63, 0, 0, 0]),
    "taken_wrong_length": pb.TrainMetrics(loss=0.5, pseudo_taken_per_class=[1, 2]),
    "correct_above_taken": pb.TrainMetrics(loss=0.5, pseudo_taken_per_class=[1, 0, 0, 0], pseudo_correct_per_class=[2, 0, 0, 0]),
    "with_truth_overflows": pb.TrainMetrics(loss=0.5, pseudo_with_truth=2**64 - 1),
    "huge_loss": pb.TrainMetrics(loss=1.7e308),
    "nan_loss": pb.TrainMetrics(loss=float("nan")),
    "inf_loss": pb.TrainMetrics(loss=float("inf")),
    "negative_loss": pb.TrainMetrics(loss=-1.0),
    "candidates_overflow": pb.TrainMetrics(loss=0.5, pseudo_candidates=2**63),
    "more_pass_tau_than_candidates": pb.TrainMetrics(loss=0.5, pseudo_candidates=3, pseudo_pass_tau=4),
    "more_pass_kappa_than_pass_tau": pb.TrainMetrics(loss=0.5, pseudo_candidates=9, pseudo_pass_tau=2, pseudo_pass_kappa=3),
    "train_seconds_nan": pb.TrainMetrics(loss=0.5, train_seconds=float("nan")),
    "train_seconds_inf": pb.TrainMetrics(loss=0.5, train_seconds=float("inf")),
    "train_seconds_minus_inf": pb.TrainMetrics(loss=0.5, train_seconds=float("-inf")),
    "train_seconds_negative": pb.TrainMetrics(loss=0.5, train_seconds=-1.0),
    "n_labeled_2_63": pb.TrainMetrics(loss=0.5, n_labeled=2**63),
    "n_labeled_2_64_minus_1": pb.TrainMetrics(loss=0.5, n_labeled=2**64 - 1),
    "n_pseudo_2_63": pb.TrainMetrics(loss=0.5, n_pseudo=2**63),
    "n_pseudo_2_64_minus_1": pb.TrainMetrics(loss=0.5, n_pseudo=2**64 - 1),
    "local_steps_2_32_minus_1": pb.TrainMetrics(loss=0.5, local_steps=2**32 - 1),
}


@pytest.fixture
def round_open(tmp_path: Path):
    server = raw.start(tmp_path, **{"semi.enabled": True})
    channel, stub = raw.stub_for(server.port)
    session = raw.join(stub, "raw", n_unlabeled=3).session
    task = raw.wait_task(stub, session)
    state = raw.fetch(stub, session, task)
    yield server, stub, session, task, state
    channel.close()
    server.shutdown(grace_s=0.2)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_header_is_refused_and_the_run_goes_on(round_open, case: str) -> None:
    server, stub, session, task, state = round_open
    before = raw.snapshot(server)
    messages = raw.update_messages(session, task, raw.update_for(state), metrics=HOSTILE[case])
    code, details = raw.code_of(lambda: raw.submit(stub, messages))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert details and "\n" not in details
    assert raw.snapshot(server) == before
    assert server.coordinator.refusals["invalid_update"] == 1
    # the same client's honest update is taken and the run ends normally, metrics line and all
    honest = pb.TrainMetrics(loss=0.25, pseudo_taken_per_class=[1, 0, 0, 0], pseudo_correct_per_class=[1, 0, 0, 0],
                             pseudo_with_truth=1)
    assert raw.submit(stub, raw.update_messages(session, task, raw.update_for(state), metrics=honest)).accepted
    assert server.wait(timeout=30) and server.failure is None
    np.testing.assert_allclose(server.coordinator.state["w.head.bias"], state["w.head.bias"] + 0.01, rtol=1e-6)
    record = json.loads((server.loop.store.metrics_path).read_text().splitlines()[-1])
    assert record["train_loss"] == 0.25 and record["pseudo_taken"] == [1, 0, 0, 0]


def test_a_hostile_evaluation_loss_is_refused(tmp_path: Path) -> None:
    server = raw.start(tmp_path, **{"federation.eval_every": 1})
    channel, stub = raw.stub_for(server.port)
    try:
        session = raw.join(stub, "raw", n_eval=4).session
        raw.answer(stub, session, raw.wait_task(stub, session))
        task = raw.wait_task(stub, session, kind=pb.TASK_KIND_EVALUATE)
        report = pb.EvaluationReport(protocol_version=raw.V, session=session, round=task.round, task_id=task.task_id,
                                     num_classes=4, confusion=[1] + [0] * 15, loss=1.7e308)
        code, _ = raw.code_of(lambda: stub.SubmitEvaluation(report, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        report.loss = 0.5
        stub.SubmitEvaluation(report, timeout=10)
        assert server.wait(timeout=30) and server.failure is None
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)
