"""The server's side of one secure-aggregation round (SecAgg+), as a state machine: it relays keys
and sealed shares, sums masked inputs, and removes the masks with the survivors' shares.

Stages close when the caller says so (all expected messages arrived, or a deadline passed);
whoever has not answered by then has dropped out:

    U1 advertised keys  ⊇  U2 sent shares  ⊇  U3 sent masked inputs  ⊇  U4 answered the unmasking

Any client's secrets are rebuilt from `threshold` shares. A round in which some needed secret
has fewer shares, or fewer than `threshold` (and at least 2) inputs are left, raises
BelowThresholdError and is never unmasked. The server holds only the running sum of masked
inputs, never one client's input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedser_shared.errors import (
    BelowThresholdError,
    MalformedShareError,
    MaskedInputError,
    SecAggStageError,
)
from fedser_shared.secagg import crypto
from fedser_shared.secagg.client import MASK_PURPOSE
from fedser_shared.secagg.graph import neighbour_graph
from fedser_shared.secagg.messages import EncryptedShare, KeyAdvert, UnmaskedSum, UnmaskReply, UnmaskRequest


def threshold_for(n_nodes: int, degree: int | None, fraction: float) -> int:
    """Shares needed to rebuild a secret: the fraction of its holders (neighbours and itself), at least 2."""
    holders = n_nodes if degree is None or degree >= n_nodes - 1 else degree + 1
    return max(2, math.ceil(fraction * holders - 1e-9))


class SecAggServer:
    def __init__(self, n_nodes: int, threshold: int, degree: int | None, graph_seed: int, context: bytes,
                 vector_length: int) -> None:
        if threshold < 2 or n_nodes < 2:
            raise ValueError("secure aggregation needs at least 2 clients and a threshold of at least 2")
        self.n_nodes, self.threshold, self.context, self.vector_length = n_nodes, threshold, context, vector_length
        self.graph = neighbour_graph(n_nodes, degree, graph_seed)
        self.stage = "advertise"
        self._adverts: dict[int, KeyAdvert] = {}
        self._peers: dict[int, frozenset[int]] = {}           # node -> its neighbours that advertised (U1)
        self._shares: dict[int, list[EncryptedShare]] = {}    # sender -> its sealed shares
        self._holds: dict[int, frozenset[int]] = {}           # node -> whose shares it holds (itself included)
        self._total = np.zeros(vector_length, dtype=np.uint32)
        self._masked: set[int] = set()                        # U3
        self._requests: dict[int, UnmaskRequest] = {}
        self._replies: dict[int, UnmaskReply] = {}
        # (owner, True for its seed / False for its mask key) -> the shares back so far, and the secret
        # once `threshold` of them came: rebuilt while the other replies are still on their way
        self._returned: dict[tuple[int, bool], list[crypto.Share]] = {}
        self._rebuilt: dict[tuple[int, bool], bytes] = {}

    def waiting_for(self) -> frozenset[int]:
        """The nodes expected in the current stage that have not answered yet."""
        expected: dict[str, tuple[Mapping[int, object] | set[int], Mapping[int, object] | set[int]]] = {
            "advertise": (set(range(1, self.n_nodes + 1)), self._adverts), "share": (self._peers, self._shares),
            "mask": (self._holds, self._masked), "unmask": (self._requests, self._replies)}
        if self.stage not in expected:
            return frozenset()
        allowed, answered = expected[self.stage]
        return frozenset(set(allowed) - set(answered))

    # ---- checks shared by every stage

    def _at(self, stage: str) -> None:
        if self.stage != stage:
            raise SecAggStageError(f"secure aggregation is at '{self.stage}', not '{stage}'")

    def _expect(self, stage: str, node: int, allowed: Mapping[int, object] | set[int] | frozenset[int],
                answered: Mapping[int, object] | set[int]) -> None:
        self._at(stage)
        if node not in allowed:
            raise SecAggStageError(f"node {node} is not expected at '{stage}'")
        if node in answered:
            raise SecAggStageError(f"node {node} already answered '{stage}'")

    def _fail(self, message: str) -> BelowThresholdError:
        self.stage = "failed"
        return BelowThresholdError(message)

    def _prune(self, members: set[int], links: Mapping[int, frozenset[int]]) -> set[int]:
        """Drop members that could not reach `threshold` shares among the others, until none is left to drop."""
        while True:
            short = {m for m in members if len(links[m] & members) + 1 < self.threshold}
            if not short:
                return members
            members -= short

    # ---- stage 1: key advertisements

    def receive_advert(self, node: int, advert: KeyAdvert) -> None:
        self._expect("advertise", node, set(range(1, self.n_nodes + 1)), self._adverts)
        crypto.load_public(advert.share_key, "the share key")
        crypto.load_public(advert.mask_key, "the mask key")
        if advert.share_key == advert.mask_key:
            raise MalformedShareError("the share key and the mask key must differ")
        self._adverts[node] = advert

    def close_advertise(self) -> dict[int, dict[int, KeyAdvert]]:
        """Each client in U1 -> the keys of its neighbours in U1."""
        self._at("advertise")
        u1 = self._prune(set(self._adverts), self.graph)
        if len(u1) < self.threshold:
            raise self._fail(f"{len(u1)} clients advertised keys; secure aggregation needs {self.threshold}")
        self._peers = {node: self.graph[node] & u1 for node in u1}
        self.stage = "share"
        return {node: {peer: self._adverts[peer] for peer in sorted(peers)} for node, peers in self._peers.items()}

    # ---- stage 2: sealed shares, relayed

    def receive_shares(self, node: int, shares: Sequence[EncryptedShare]) -> None:
        self._expect("share", node, self._peers, self._shares)
        recipients = [s.recipient for s in shares]
        if sorted(recipients) != sorted(self._peers[node]) or any(s.sender != node for s in shares):
            raise MalformedShareError(f"node {node} must send one share to each of its {len(self._peers[node])} "
                                      f"neighbours, from itself")
        for share in shares:
            if len(share.ciphertext) != crypto.SHARE_CIPHERTEXT_BYTES:
                raise MalformedShareError(f"a sealed share is {crypto.SHARE_CIPHERTEXT_BYTES} bytes, node {node} sent "
                                          f"{len(share.ciphertext)}")
        self._shares[node] = list(shares)

    def close_shares(self) -> dict[int, list[EncryptedShare]]:
        """Each client in U2 -> the sealed shares its neighbours in U2 sent it."""
        self._at("share")
        u2 = self._prune(set(self._shares), self._peers)
        if len(u2) < self.threshold:
            raise self._fail(f"{len(u2)} clients shared their secrets; secure aggregation needs {self.threshold}")
        self._holds = {node: (self._peers[node] & u2) | {node} for node in u2}
        self.stage = "mask"
        sealed = {(s.sender, s.recipient): s for sender in u2 for s in self._shares[sender]}
        return {node: [sealed[sender, node] for sender in sorted(self._holds[node] - {node})] for node in u2}

    # ---- stage 3: masked inputs, summed as they come

    def receive_masked(self, node: int, masked: np.ndarray) -> None:
        self._expect("mask", node, self._holds, self._masked)
        if masked.dtype != np.uint32 or masked.shape != (self.vector_length,):
            raise MaskedInputError(f"a masked input is {self.vector_length} uint32 values; node {node} sent "
                                   f"{masked.shape} {masked.dtype}")
        self._total += masked  # wraps around: arithmetic mod 2^32
        self._masked.add(node)

    def close_masked(self) -> dict[int, UnmaskRequest]:
        """Each client in U3 -> which of the shares it holds to reveal: seeds of U3, keys of U2 - U3."""
        self._at("mask")
        if len(self._masked) < self.threshold:
            raise self._fail(f"{len(self._masked)} masked inputs arrived; secure aggregation needs {self.threshold}")
        self.stage = "unmask"
        self._requests = {node: UnmaskRequest(frozenset(self._holds[node] & self._masked),
                                              frozenset(self._holds[node] - self._masked))
                          for node in sorted(self._masked)}
        return dict(self._requests)

    # ---- stage 4: shares back, masks off

    def receive_unmask(self, node: int, reply: UnmaskReply) -> None:
        self._expect("unmask", node, self._requests, self._replies)
        request = self._requests[node]
        if set(reply.seed_shares) != request.seed_of or set(reply.key_shares) != request.key_of:
            raise MalformedShareError(f"node {node} answered for other peers than it was asked about")
        shares = {(owner, seed): crypto.Share.from_bytes(data) for seed, given in ((True, reply.seed_shares),
                                                                              (False, reply.key_shares))
                  for owner, data in given.items()}
        for (owner, _), share in shares.items():
            if share.index != self._share_index(owner, node):
                raise MalformedShareError(f"node {node}'s share of node {owner} has index {share.index}, "
                                          f"expected {self._share_index(owner, node)}")
        self._replies[node] = reply
        for secret, share in shares.items():
            returned = self._returned.setdefault(secret, [])
            returned.append(share)
            if len(returned) == self.threshold:  # holders differ, so do their indexes
                self._rebuilt[secret] = crypto.combine_secret(returned)

    def _share_index(self, owner: int, holder: int) -> int:
        return sorted(self._peers[owner] | {owner}).index(holder) + 1

    def _rebuild(self, owner: int, seed: bool) -> bytes:
        if (owner, seed) not in self._rebuilt:
            raise self._fail(f"{len(self._returned.get((owner, seed), []))} shares of node {owner}'s "
                             f"{'seed' if seed else 'mask key'} came back; {self.threshold} are needed")
        return self._rebuilt[owner, seed]

    def finish(self) -> UnmaskedSum:
        """Close the unmasking: the survivors' sum, or BelowThresholdError (nothing is unmasked then).

        Every secret was rebuilt as its last needed share came back, and is checked before the sum
        is touched; then the masks come off the running sum in place, one keystream at a time."""
        self._at("unmask")
        dropped = set(self._holds) - self._masked
        seeds = [self._rebuild(node, seed=True) for node in sorted(self._masked)]
        keys = {node: crypto.load_private(self._rebuild(node, seed=False)) for node in sorted(dropped)}
        for node, key in keys.items():
            if crypto.public_bytes(key) != self._adverts[node].mask_key:
                self.stage = "failed"
                raise MalformedShareError(f"the shares of node {node}'s mask key do not rebuild the key it advertised")
        total = self._total
        for seed in seeds:
            crypto.apply_mask(total, seed, subtract=True)
        for node, key in keys.items():
            for survivor in sorted(self._masked & self._holds[node]):
                # what the survivor added for the pair (+ when survivor < node), taken off
                crypto.apply_mask(total, crypto.agreed_key(key, self._adverts[survivor].mask_key, MASK_PURPOSE,
                                                           self.context), subtract=survivor < node)
        self.stage = "done"
        return UnmaskedSum(total, frozenset(self._masked))
