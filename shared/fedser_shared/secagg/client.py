"""A client's side of one secure-aggregation round (SecAgg+, Bell et al. 2020), as a state machine:
values in, values out; randomness comes in as a function.

advertise() -> KeyAdvert                        stage 1: two fresh X25519 public keys
share_keys(peer adverts) -> encrypted shares    stage 2: Shamir shares of the mask key and the
                                                self-mask seed, one sealed bundle per neighbour
masked_input(quantised, shares for me) -> y     stage 3: y = x + PRG(seed) + sum_v ±PRG(s_uv) mod 2^32
unmask(request) -> shares                       stage 4: per peer the seed share or the key share,
                                                never both, and only once per round
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedser_shared.errors import (
    BelowThresholdError,
    MalformedShareError,
    MaskedInputError,
    SecAggStageError,
    UnmaskRefusedError,
)
from fedser_shared.secagg import crypto
from fedser_shared.secagg.messages import EncryptedShare, KeyAdvert, RoundSetup, UnmaskReply, UnmaskRequest

SHARE_PURPOSE = b"share"
MASK_PURPOSE = b"mask"

_STAGES = ("advertise", "share", "mask", "unmask", "done")


def add_pairwise_mask(total: np.ndarray, own: X25519PrivateKey, own_node: int, peer_key: bytes, peer_node: int,
                      context: bytes) -> None:
    """Add in place what `own_node` adds for the pair (the peer subtracts it): + when own_node < peer_node."""
    crypto.apply_mask(total, crypto.agreed_key(own, peer_key, MASK_PURPOSE, context), subtract=own_node > peer_node)


class SecAggClient:
    def __init__(self, setup: RoundSetup, random_bytes: crypto.RandomBytes = os.urandom) -> None:
        if setup.threshold < 2 or setup.vector_length < 1:
            raise ValueError("a secure round needs a threshold of at least 2 and a non-empty vector")
        self.setup = setup
        self._random_bytes = random_bytes
        self._share_key = crypto.new_private_key(random_bytes)
        self._mask_key = crypto.new_private_key(random_bytes)
        self._seed = random_bytes(crypto.SECRET_BYTES)
        self._stage = "advertise"
        self._peers: dict[int, KeyAdvert] = {}
        # node -> (its mask key's share, its seed's share) that this client holds, itself included
        self._held: dict[int, tuple[crypto.Share, crypto.Share]] = {}
        self._sealing: dict[int, bytes] = {}  # peer -> the AES-GCM key agreed with it, both ways (share_keys)

    @property
    def node(self) -> int:
        return self.setup.node

    def _enter(self, stage: str) -> None:
        if self._stage != stage:
            raise SecAggStageError(f"secure aggregation: '{stage}' asked while this client is at '{self._stage}'")
        self._stage = _STAGES[_STAGES.index(stage) + 1]

    def advertise(self) -> KeyAdvert:
        self._enter("advertise")
        return KeyAdvert(crypto.public_bytes(self._share_key), crypto.public_bytes(self._mask_key))

    def bind(self, setup: RoundSetup) -> None:
        """The round's setup, when it is learned only with the peers' keys (after `advertise`, as over gRPC)."""
        if self._stage != "share":
            raise SecAggStageError("a secure round's setup can change only between advertise and share_keys")
        if setup.threshold < 2 or setup.vector_length < 1 or setup.node < 1:
            raise MalformedShareError(f"unusable secure round setup: node {setup.node}, threshold {setup.threshold}, "
                                      f"{setup.vector_length} elements")
        self.setup = setup

    def share_keys(self, peers: Mapping[int, KeyAdvert]) -> list[EncryptedShare]:
        self._enter("share")
        if self.node in peers:
            raise MalformedShareError("the server listed this client among its own peers")
        if len(peers) + 1 < self.setup.threshold:
            raise BelowThresholdError(f"{len(peers)} peers cannot hold {self.setup.threshold} shares of this client's secrets")
        for node, advert in peers.items():
            crypto.load_public(advert.share_key, f"node {node}'s share key")
            crypto.load_public(advert.mask_key, f"node {node}'s mask key")
        self._peers = dict(peers)
        holders = sorted([*peers, self.node])
        key_shares = crypto.split_secret(crypto.private_bytes(self._mask_key), self.setup.threshold, len(holders))
        seed_shares = crypto.split_secret(self._seed, self.setup.threshold, len(holders))
        out = []
        for holder, key_share, seed_share in zip(holders, key_shares, seed_shares, strict=True):
            if holder == self.node:
                self._held[self.node] = (key_share, seed_share)
                continue
            key = self._sealing[holder] = crypto.agreed_key(self._share_key, peers[holder].share_key, SHARE_PURPOSE,
                                                            self.setup.context)
            out.append(EncryptedShare(self.node, holder, crypto.encrypt_shares(
                key, self.setup.context, self.node, holder, key_share, seed_share, self._random_bytes)))
        return out

    def masked_input(self, quantised: np.ndarray, received: Sequence[EncryptedShare]) -> np.ndarray:
        """`quantised`: this client's input (quantise.encode); `received`: its neighbours' shares for it."""
        self._enter("mask")
        if quantised.dtype != np.uint32 or quantised.shape != (self.setup.vector_length,):
            raise MaskedInputError(f"the input must be {self.setup.vector_length} uint32 values, got "
                                   f"{quantised.shape} {quantised.dtype}")
        senders: set[int] = set()
        for share in received:
            if share.recipient != self.node or share.sender not in self._peers or share.sender in senders:
                raise MalformedShareError(f"an encrypted share from node {share.sender} to node {share.recipient} "
                                          f"was not expected by node {self.node}")
            self._held[share.sender] = crypto.decrypt_shares(self._sealing[share.sender], self.setup.context,
                                                             share.sender, self.node, share.ciphertext)
            senders.add(share.sender)
        if len(senders) + 1 < self.setup.threshold:
            raise BelowThresholdError(f"only {len(senders)} neighbours shared their secrets; the round needs "
                                      f"{self.setup.threshold - 1}")
        masked = quantised.copy()  # the one copy: every mask is added to it in place
        crypto.apply_mask(masked, self._seed)
        for peer in sorted(senders):
            add_pairwise_mask(masked, self._mask_key, self.node, self._peers[peer].mask_key, peer, self.setup.context)
        return masked

    def unmask(self, request: UnmaskRequest) -> UnmaskReply:
        self._enter("unmask")
        both = request.seed_of & request.key_of
        if both:
            raise UnmaskRefusedError(f"the server asked for both the seed and the key shares of nodes {sorted(both)}")
        if self.node in request.key_of:
            raise UnmaskRefusedError("the server asked for this client's own mask key, yet it sent its masked input")
        unknown = (request.seed_of | request.key_of) - set(self._held)
        if unknown:
            raise UnmaskRefusedError(f"this client holds no shares of nodes {sorted(unknown)}")
        return UnmaskReply(
            seed_shares={node: self._held[node][1].to_bytes() for node in sorted(request.seed_of)},
            key_shares={node: self._held[node][0].to_bytes() for node in sorted(request.key_of)},
        )
