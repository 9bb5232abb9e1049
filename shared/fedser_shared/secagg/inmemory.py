"""One secure round with every client in this process: the same client and server state machines,
messages passed as values. The in-process engine and benchmarks/privacy.py run rounds this way;
the gRPC engine passes the same values over the wire (docs/protocol.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedser_shared.secagg import crypto
from fedser_shared.secagg.client import SecAggClient
from fedser_shared.secagg.messages import RoundSetup, UnmaskedSum
from fedser_shared.secagg.server import SecAggServer

STAGES = ("advertise", "share", "mask", "unmask")
_NODE_ID_BYTES = 4  # a node number as it travels beside a sealed share or a share


@dataclass
class Traffic:
    """Payload bytes one client sent and received in a secure round (keys, shares, masked input;
    not the transport's framing)."""

    sent: int = 0
    received: int = 0


@dataclass(frozen=True)
class SecureRound:
    result: UnmaskedSum
    traffic: dict[str, Traffic] = field(default_factory=dict)


def secure_sum(quantised: Mapping[str, np.ndarray], threshold: int, degree: int | None, graph_seed: int,
               context: bytes, drop_before: Mapping[str, str] | None = None,
               random_bytes: crypto.RandomBytes = os.urandom) -> SecureRound:
    """The sum mod 2^32 of the clients' quantised inputs, computed by the SecAgg+ protocol.

    `drop_before`: client name -> the stage ('advertise', 'share', 'mask', 'unmask') it does not
    answer, to simulate dropouts. Raises BelowThresholdError when the round cannot be unmasked.
    """
    drops = dict(drop_before or {})
    names = sorted(quantised)
    node_of = {name: index + 1 for index, name in enumerate(names)}
    length = len(next(iter(quantised.values())))
    server = SecAggServer(len(names), threshold, degree, graph_seed, context, length)
    clients = {name: SecAggClient(RoundSetup(node_of[name], threshold, context, length), random_bytes) for name in names}
    traffic = {name: Traffic() for name in names}

    def alive(name: str, stage: str) -> bool:
        return name not in drops or STAGES.index(drops[name]) > STAGES.index(stage)

    for name in names:
        if alive(name, "advertise"):
            server.receive_advert(node_of[name], clients[name].advertise())
            traffic[name].sent += 2 * crypto.KEY_BYTES
    peer_keys = server.close_advertise()
    by_node = {node_of[name]: name for name in names}
    for node, peers in peer_keys.items():
        name = by_node[node]
        traffic[name].received += len(peers) * (2 * crypto.KEY_BYTES + _NODE_ID_BYTES)
        if alive(name, "share"):
            shares = clients[name].share_keys(peers)
            server.receive_shares(node, shares)
            traffic[name].sent += len(shares) * (crypto.SHARE_CIPHERTEXT_BYTES + _NODE_ID_BYTES)
    for node, shares in server.close_shares().items():
        name = by_node[node]
        traffic[name].received += len(shares) * (crypto.SHARE_CIPHERTEXT_BYTES + _NODE_ID_BYTES)
        if alive(name, "mask"):
            server.receive_masked(node, clients[name].masked_input(quantised[name], shares))
            traffic[name].sent += 4 * length
    for node, request in server.close_masked().items():
        name = by_node[node]
        traffic[name].received += (len(request.seed_of) + len(request.key_of)) * _NODE_ID_BYTES
        if alive(name, "unmask"):
            reply = clients[name].unmask(request)
            server.receive_unmask(node, reply)
            traffic[name].sent += (len(reply.seed_shares) + len(reply.key_shares)) * (crypto.SHARE_BYTES + _NODE_ID_BYTES)
    return SecureRound(server.finish(), traffic)


def bytes_per_client(vector_length: int, n_peers: int) -> Traffic:
    """A client's secure-aggregation payload in a round without dropouts, with `n_peers` neighbours
    (the masked input is 4 bytes per element; a plain float32 update is 4 bytes per element too)."""
    keys = 2 * crypto.KEY_BYTES
    sealed = crypto.SHARE_CIPHERTEXT_BYTES + _NODE_ID_BYTES
    share = crypto.SHARE_BYTES + _NODE_ID_BYTES
    return Traffic(sent=keys + n_peers * sealed + 4 * vector_length + (n_peers + 1) * share,
                   received=n_peers * (keys + _NODE_ID_BYTES) + n_peers * sealed + (n_peers + 1) * _NODE_ID_BYTES)
