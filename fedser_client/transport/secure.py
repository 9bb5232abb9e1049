"""A client's secure-aggregation stages over gRPC (docs/protocol.md "Secure aggregation"): the
SecAgg+ client state machine of `fedser_shared.secagg`, one call per stage. Each of the first
three calls returns when its stage closed for the whole round."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedser_shared import PROTOCOL_VERSION
from fedser_shared.config import RunConfig
from fedser_shared.logging import get_logger
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.proto.fedser.v1 import coordinator_pb2_grpc as pb_grpc
from fedser_shared.secagg import (
    EncryptedShare,
    KeyAdvert,
    RoundSetup,
    SecAggClient,
    UnmaskRequest,
    VectorLayout,
    encode,
)
from fedser_shared.secagg.crypto import RandomBytes
from fedser_shared.secagg.quantise import Transform

log = get_logger(__name__)


def submit_securely(stub: pb_grpc.CoordinatorStub, session: pb.Session, task: pb.Task, config: RunConfig,
                    update: Mapping[str, np.ndarray], n_samples: int, rng: np.random.Generator,
                    transform: Transform | None = None, random_bytes: RandomBytes = os.urandom,
                    stop_after: str | None = None) -> bool:
    """Take part in the task's secure round with `update`; True once this client's shares went back.

    `stop_after` ('advertise', 'share', 'mask'): leave after that stage (tests of dropouts).
    """
    privacy, fed = config.privacy, config.federation
    wait_s = fed.round_timeout_s + privacy.secagg_stage_timeout_s + 30
    ids: dict[str, Any] = {"protocol_version": PROTOCOL_VERSION, "session": session, "round": task.round, "task_id": task.task_id}

    # stage 1: keys. The node number, threshold and roster come back with the peers' keys.
    client = SecAggClient(RoundSetup(1, 2, b"", 1), random_bytes)  # keys first: the setup comes with the peers
    advert = client.advertise()
    peers = stub.SecAggAdvertise(pb.SecAggAdvertiseRequest(**ids, share_key=advert.share_key, mask_key=advert.mask_key),
                                 timeout=wait_s)
    client.bind(RoundSetup(peers.node, peers.threshold, peers.context, peers.vector_length))
    if stop_after == "advertise":
        return False

    # stage 2: sealed shares of this client's mask key and seed, one per neighbour
    sealed = client.share_keys({p.node: KeyAdvert(p.share_key, p.mask_key) for p in peers.peers})
    mine = stub.SecAggShare(pb.SecAggShareRequest(**ids, shares=[
        pb.SecAggShare(sender=s.sender, recipient=s.recipient, ciphertext=s.ciphertext) for s in sealed]), timeout=wait_s)
    if stop_after == "share":
        return False

    # stage 3: the quantised update, masked
    shapes = {name: tuple(value.shape) for name, value in update.items()}
    layout = VectorLayout.of(shapes, peers.n_clients, privacy.secagg_max_weight, privacy.secagg_clip_norm,
                             privacy.secagg_control_clip_norm)
    masked = client.masked_input(encode(update, n_samples, layout, rng, transform),
                                 [EncryptedShare(s.sender, s.recipient, s.ciphertext) for s in mine.shares])
    ask = stub.SecAggMask(pb.SecAggMaskRequest(**ids, masked=masked.astype("<u4", copy=False).tobytes()), timeout=wait_s)
    if stop_after == "mask":
        return False

    # stage 4: the shares that unmask the sum (refused if the server asks for both secrets of one peer)
    reply = client.unmask(UnmaskRequest(frozenset(ask.seed_of), frozenset(ask.key_of)))
    stub.SecAggUnmask(pb.SecAggUnmaskShares(
        **ids, seed_shares=[pb.SecAggNodeShare(node=n, share=s) for n, s in reply.seed_shares.items()],
        key_shares=[pb.SecAggNodeShare(node=n, share=s) for n, s in reply.key_shares.items()]), timeout=60)
    return True
