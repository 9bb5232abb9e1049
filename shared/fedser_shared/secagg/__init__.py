"""Secure aggregation (SecAgg+, Bell et al. 2020; Bonawitz et al. 2017 as the complete graph):
the server learns the sum of the clients' updates and nothing about any one of them.

A pure core: `client.SecAggClient` and `server.SecAggServer` are state machines over the values
in `messages`; `quantise` turns an update into integers mod 2^32 and a sum back into an update;
`crypto` wraps the maintained primitives; `inmemory.secure_sum` runs a round in one process.
docs/privacy.md says what it protects against; docs/protocol.md gives the wire format.
"""

from fedser_shared.secagg.client import SecAggClient
from fedser_shared.secagg.inmemory import SecureRound, Traffic, bytes_per_client, secure_sum
from fedser_shared.secagg.messages import EncryptedShare, KeyAdvert, RoundSetup, UnmaskedSum, UnmaskReply, UnmaskRequest
from fedser_shared.secagg.quantise import DecodedSum, VectorLayout, decode, encode
from fedser_shared.secagg.server import SecAggServer, threshold_for

__all__ = ["DecodedSum", "EncryptedShare", "KeyAdvert", "RoundSetup", "SecAggClient", "SecAggServer", "SecureRound",
           "Traffic", "UnmaskReply", "UnmaskRequest", "UnmaskedSum", "VectorLayout", "bytes_per_client", "decode",
           "encode", "secure_sum", "threshold_for"]
