"""Bad secure-aggregation messages over real gRPC: each gets the usual one-line refusal with its
key in the trailing metadata, is counted like every other refusal, and never stops the round."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedser_shared import PROTOCOL_VERSION
from fedser_shared.proto.fedser.v1 import coordinator_pb2 as pb
from fedser_shared.refusal import refusal_of
from fedser_shared.secagg import EncryptedShare, KeyAdvert, RoundSetup, SecAggClient, UnmaskRequest
from tests.faults import raw

pytestmark = pytest.mark.timeout(180)


def refused(call, request) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    return caught.value.code(), refusal_of(caught.value)


def take_part(stub, session, task, bad: bool, seen: dict) -> None:
    ids = {"protocol_version": PROTOCOL_VERSION, "session": session, "round": task.round, "task_id": task.task_id}
    client = SecAggClient(RoundSetup(1, 2, b"", 1))
    advert = client.advertise()
    if bad:
        seen["wrong_task"] = refused(stub.SecAggAdvertise, pb.SecAggAdvertiseRequest(
            **{**ids, "task_id": "not-my-task"}, share_key=advert.share_key, mask_key=advert.mask_key))
        seen["short_key"] = refused(stub.SecAggAdvertise, pb.SecAggAdvertiseRequest(
            **ids, share_key=advert.share_key[:31], mask_key=advert.mask_key))
    peers = stub.SecAggAdvertise(pb.SecAggAdvertiseRequest(**ids, share_key=advert.share_key, mask_key=advert.mask_key),
                                 timeout=60)
    client.bind(RoundSetup(peers.node, peers.threshold, peers.context, peers.vector_length))
    sealed = [pb.SecAggShare(sender=s.sender, recipient=s.recipient, ciphertext=s.ciphertext)
              for s in client.share_keys({p.node: KeyAdvert(p.share_key, p.mask_key) for p in peers.peers})]
    if bad:
        cut = [pb.SecAggShare(sender=sealed[0].sender, recipient=sealed[0].recipient, ciphertext=sealed[0].ciphertext[:50]),
               *sealed[1:]]
        seen["short_share"] = refused(stub.SecAggShare, pb.SecAggShareRequest(**ids, shares=cut))
    mine = stub.SecAggShare(pb.SecAggShareRequest(**ids, shares=sealed), timeout=60)
    masked = client.masked_input(np.zeros(peers.vector_length, np.uint32),
                                 [EncryptedShare(s.sender, s.recipient, s.ciphertext) for s in mine.shares])
    if bad:
        seen["short_vector"] = refused(stub.SecAggMask, pb.SecAggMaskRequest(**ids, masked=masked.tobytes()[:-4]))
    ask = stub.SecAggMask(pb.SecAggMaskRequest(**ids, masked=masked.astype("<u4").tobytes()), timeout=60)
    reply = client.unmask(UnmaskRequest(frozenset(ask.seed_of), frozenset(ask.key_of)))
    stub.SecAggUnmask(pb.SecAggUnmaskShares(
        **ids, seed_shares=[pb.SecAggNodeShare(node=n, share=s) for n, s in reply.seed_shares.items()],
        key_shares=[pb.SecAggNodeShare(node=n, share=s) for n, s in reply.key_shares.items()]), timeout=60)
    seen.setdefault("finished", []).append(session.client_id)


def test_bad_secure_messages_are_refused_counted_and_the_round_still_completes(tmp_path: Path) -> None:
    server = raw.start(tmp_path, **{"federation.min_clients": 3, "privacy.secure_aggregation": "secagg+"})
    channel, stub = raw.stub_for(server.port)
    try:
        initial = {n: v.copy() for n, v in server.coordinator.state.items()}
        sessions = [raw.join(stub, f"c{i}").session for i in range(3)]
        # outside a secure round: no task of this client is open
        early = refused(stub.SecAggMask, pb.SecAggMaskRequest(protocol_version=PROTOCOL_VERSION, session=sessions[0],
                                                              round=7, task_id="x", masked=b"\0" * 8))
        tasks = [raw.wait_task(stub, s) for s in sessions]
        # a plaintext update has no place in a secure round: refused, nothing of it reaches the sums
        with pytest.raises(grpc.RpcError) as plain:
            raw.answer(stub, sessions[1], tasks[1])
        plaintext_refused = (plain.value.code(), refusal_of(plain.value))
        seen: dict = {}
        threads = [threading.Thread(target=take_part, args=(stub, s, t, i == 0, seen)) for i, (s, t) in
                   enumerate(zip(sessions, tasks))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert server.wait(timeout=60) and server.failure is None
        refusals = dict(server.coordinator.request_refusals)
        record = server.coordinator.history[-1]
    finally:
        channel.close()
        server.shutdown(grace_s=0.2)

    assert early == (grpc.StatusCode.FAILED_PRECONDITION, "stale_round")
    assert plaintext_refused == (grpc.StatusCode.PERMISSION_DENIED, "not_participating")
    assert seen["wrong_task"] == (grpc.StatusCode.FAILED_PRECONDITION, "stale_round")
    assert seen["short_key"] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_share")
    assert seen["short_share"] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_share")
    assert seen["short_vector"] == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_masked_input")
    assert len(seen["finished"]) == 3 and record["n_updates"] == 3
    assert refusals[("SecAggShare", "invalid_share")] == 1 and refusals[("SecAggMask", "invalid_masked_input")] == 1
    assert refusals[("SecAggAdvertise", "invalid_share")] == 1
    assert record["refused_requests"]["SecAggMask.invalid_masked_input"] == 1
    # every client sent zeros: the bad messages left the model where it was
    for name, value in initial.items():
        np.testing.assert_allclose(server.coordinator.state[name], value, atol=1e-6)
