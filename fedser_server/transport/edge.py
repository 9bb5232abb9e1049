"""Every check of a client's message, once, at the edge: protobuf in, a typed value out.

What comes out of here (`UpdateHeader`, `Evaluation`) is trusted below: the round only asks
whether the task it answers is still open. Each check raises the typed error whose reason is
the refusal key (docs/protocol.md).
"""

from __future__ import annotations

import numpy as np

from fedser_server.core.reports import MAX_COUNT, Evaluation, UpdateHeader, check_loss
from fedser_server.state.registry import ClientRecord
from fedser_shared import PROTOCOL_VERSION
from fedser_shared.checksum import Checksum
from fedser_shared.errors import InvalidUpdateError, ProtocolMismatchError
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.train_metrics import TrainMetrics

CHECKSUM_OF = {pb.CHECKSUM_SHA256: Checksum.SHA256, pb.CHECKSUM_XXH3_128: Checksum.XXH3_128}


def check_protocol(version: int) -> None:
    if version != PROTOCOL_VERSION:
        raise ProtocolMismatchError(f"protocol version mismatch: client speaks {version}, server speaks {PROTOCOL_VERSION}")


def update_header(head: pb.UpdateHeader, client: ClientRecord, num_classes: int, max_update_bytes: int) -> UpdateHeader:
    """An update's header message from an authenticated client, checked into a typed value."""
    checksum = CHECKSUM_OF.get(head.blob.checksum)
    if checksum is None:
        raise InvalidUpdateError(f"unknown checksum {head.blob.checksum}")
    if head.blob.sha256 or head.blob.xxh3_128:
        raise InvalidUpdateError("an update header's blob digests must be empty: the digest travels in the trailer")
    total_len = head.blob.total_len
    if total_len <= 0:
        raise InvalidUpdateError(f"announced blob length {total_len} must be positive")
    if total_len > max_update_bytes:
        raise InvalidUpdateError(f"update of {total_len} bytes exceeds the model-derived limit of {max_update_bytes}")
    metrics = TrainMetrics.from_pb(head.n_samples, head.metrics, num_classes)
    # a client trains on its labeled examples plus pseudo-labels drawn from its unlabeled pool
    plausible = client.n_labeled + client.n_unlabeled
    if metrics.n_samples > plausible:
        raise InvalidUpdateError(f"n_samples {metrics.n_samples} is implausible: the client declared "
                                 f"{client.n_labeled} labeled and {client.n_unlabeled} unlabeled examples")
    return UpdateHeader(round=head.round, task_id=head.task_id, total_len=total_len, metrics=metrics, checksum=checksum)


def evaluation(request: pb.EvaluationReport, client: ClientRecord, num_classes: int) -> Evaluation:
    """An evaluation report from an authenticated client, checked into a typed value."""
    if request.num_classes != num_classes:
        raise InvalidUpdateError(f"evaluation has {request.num_classes} classes, the run has {num_classes}")
    if len(request.confusion) != num_classes * num_classes:
        raise InvalidUpdateError(f"confusion matrix must have {num_classes}x{num_classes} counts, "
                                 f"got {len(request.confusion)}")
    if any(count > MAX_COUNT for count in request.confusion):
        raise InvalidUpdateError(f"confusion matrix holds a count above {MAX_COUNT}")
    confusion = np.asarray(request.confusion, dtype=np.int64).reshape(num_classes, num_classes)
    if int(confusion.sum()) > client.n_eval:
        raise InvalidUpdateError(f"confusion matrix counts {int(confusion.sum())} examples, "
                                 f"the client declared {client.n_eval} for evaluation")
    return Evaluation(round=request.round, task_id=request.task_id, confusion=confusion,
                      loss=check_loss("evaluation loss", request.loss))
