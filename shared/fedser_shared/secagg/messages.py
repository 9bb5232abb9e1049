"""The values that secure-aggregation clients and the server exchange, stage by stage.

Clients are named by node numbers 1..n (the round's roster, in the order of their client ids);
the transport maps them to client ids. Bytes layouts are in docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class RoundSetup:
    """What a sampled client learns at the start of a secure round (stage 0)."""

    node: int               # this client's node number
    threshold: int          # shares needed to rebuild any one client's secrets
    context: bytes          # binds every key and share to this round (e.g. the task id)
    vector_length: int      # elements of the masked vector (the quantised layout's size)


@dataclass(frozen=True)
class KeyAdvert:
    """Stage 1, client -> server: two X25519 public keys (32 bytes each)."""

    share_key: bytes  # agreement of the key that encrypts shares between two clients
    mask_key: bytes   # agreement of the pairwise mask seeds


@dataclass(frozen=True)
class EncryptedShare:
    """Stage 2, client -> server -> client: the sender's shares for one recipient, AES-GCM sealed."""

    sender: int
    recipient: int
    ciphertext: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 4, server -> client: for which peers it wants the self-mask seed share (they sent a
    masked input) and for which the mask key share (they dropped after sharing). Never both."""

    seed_of: frozenset[int]
    key_of: frozenset[int]


@dataclass(frozen=True)
class UnmaskReply:
    """Stage 4, client -> server: the requested shares, each 36 bytes (crypto.Share layout)."""

    seed_shares: Mapping[int, bytes] = field(default_factory=dict)
    key_shares: Mapping[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class UnmaskedSum:
    """The result: the sum mod 2^32 of the survivors' quantised inputs, and who they were."""

    total: np.ndarray        # uint32
    survivors: frozenset[int]
