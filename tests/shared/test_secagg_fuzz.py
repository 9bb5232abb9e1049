"""A stateful fuzz of the secure-aggregation server: honest clients' messages interleaved with
malformed, duplicated, out-of-order and foreign ones, stages closed at random moments.

Invariants: every refusal is a typed SecAggError (never another exception); a refused message
changes nothing; and whenever the server completes a round, its sum is exactly (mod 2^32) the
sum of the inputs of the clients it names as survivors. A round it cannot complete is refused
as a whole.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from fedser_shared.errors import SecAggError
from fedser_shared.secagg import KeyAdvert, RoundSetup, SecAggClient, SecAggServer, UnmaskReply
from fedser_shared.secagg.messages import EncryptedShare

N = 5
THRESHOLD = 3
LENGTH = 16
nodes = st.integers(0, N + 1)


class SecAggServerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.server = SecAggServer(N, THRESHOLD, None, 0, b"fuzz", LENGTH)
        self.clients = {node: SecAggClient(RoundSetup(node, THRESHOLD, b"fuzz", LENGTH)) for node in range(1, N + 1)}
        rng = np.random.default_rng(0)
        self.inputs = {node: rng.integers(0, 2**32, LENGTH, dtype=np.uint64).astype(np.uint32) for node in self.clients}
        self.adverts = {node: c.advertise() for node, c in self.clients.items()}
        self.peer_keys: dict[int, dict[int, KeyAdvert]] = {}
        self.forwarded: dict[int, list[EncryptedShare]] = {}
        self.requests: dict = {}
        self.shares_cache: dict[int, list[EncryptedShare]] = {}
        self.failed = False
        self.result = None

    def deliver(self, call, *args) -> None:
        try:
            call(*args)
        except SecAggError:
            pass
        except Exception as error:  # pragma: no cover - the assertion is the point
            raise AssertionError(f"untyped error {type(error).__name__}: {error}") from error

    def close(self, call):
        try:
            return call()
        except SecAggError:
            self.failed = self.server.stage == "failed" or self.failed
            return None

    @rule(node=nodes, garbage=st.booleans())
    def advertise(self, node, garbage):
        advert = self.adverts.get(node, KeyAdvert(bytes(32), bytes(31)))
        if garbage:
            advert = KeyAdvert(advert.mask_key, advert.mask_key)
        self.deliver(self.server.receive_advert, node, advert)

    @initialize(stages=st.integers(0, 4), absent=st.sets(st.integers(1, N), max_size=3))
    def start_somewhere(self, stages, absent):
        """Honest clients (but the absent ones) take the round through `stages` closed stages."""
        closes = [self.close_advertise, self.close_shares, self.close_masked, self.finish]
        for close in closes[:stages]:
            for node in range(1, N + 1):
                if node not in absent:
                    self.honest_step(node)
            close(17)

    @rule(some=st.lists(st.integers(1, N), min_size=1, max_size=N))
    def honest_steps(self, some):
        for node in some:
            self.honest_step(node)

    def honest_step(self, node):
        """What an honest client does at the server's current stage."""
        if self.server.stage == "advertise":
            self.advertise(node, False)
        elif self.server.stage == "share" and self.peer_keys:
            self.share(node, "valid")
        elif self.server.stage == "mask" and self.forwarded:
            self.masked(node, "valid")
        elif self.server.stage == "unmask" and self.requests:
            self.unmask(node, "valid")

    @rule(early=st.integers(0, 31))
    def close_advertise(self, early):
        if early != 17 and len(self.server._adverts) < N - 1:
            return  # most closes wait for the stage to fill; one in 32 comes early
        keys = self.close(self.server.close_advertise)
        if keys is not None:
            self.peer_keys = keys

    @precondition(lambda self: bool(self.peer_keys))
    @rule(node=nodes, how=st.sampled_from(["valid", "truncate", "drop_one", "wrong_sender", "twice"]))
    def share(self, node, how):
        if node not in self.peer_keys:
            self.deliver(self.server.receive_shares, node, [])
            return
        if node not in self.shares_cache:
            self.shares_cache[node] = self.clients[node].share_keys(self.peer_keys[node])
        shares = list(self.shares_cache[node])
        if how == "truncate":
            shares = [dataclasses.replace(shares[0], ciphertext=shares[0].ciphertext[:7])] + shares[1:]
        elif how == "drop_one":
            shares = shares[1:]
        elif how == "wrong_sender":
            shares = [dataclasses.replace(s, sender=s.recipient) for s in shares]
        self.deliver(self.server.receive_shares, node, shares)
        if how == "twice":
            self.deliver(self.server.receive_shares, node, shares)

    @rule(early=st.integers(0, 31))
    def close_shares(self, early):
        if early != 17 and len(self.server._shares) < N - 1:
            return  # most closes wait for the stage to fill; one in 32 comes early
        forwarded = self.close(self.server.close_shares)
        if forwarded is not None:
            self.forwarded = forwarded

    @precondition(lambda self: bool(self.forwarded))
    @rule(node=nodes, how=st.sampled_from(["valid", "short", "float", "twice"]))
    def masked(self, node, how):
        if node not in self.forwarded:
            self.deliver(self.server.receive_masked, node, np.zeros(LENGTH, np.uint32))
            return
        client = self.clients[node]
        if how == "short":
            self.deliver(self.server.receive_masked, node, np.zeros(LENGTH - 1, np.uint32))
        elif how == "float":
            self.deliver(self.server.receive_masked, node, np.zeros(LENGTH, np.float64))
        elif client._stage == "mask":  # each honest client masks once
            masked = client.masked_input(self.inputs[node], self.forwarded[node])
            self.deliver(self.server.receive_masked, node, masked)
            if how == "twice":
                self.deliver(self.server.receive_masked, node, masked)

    @rule(early=st.integers(0, 31))
    def close_masked(self, early):
        if early != 17 and len(self.server._masked) < N - 1:
            return  # most closes wait for the stage to fill; one in 32 comes early
        requests = self.close(self.server.close_masked)
        if requests is not None:
            self.requests = requests

    @precondition(lambda self: bool(self.requests))
    @rule(node=nodes, how=st.sampled_from(["valid", "missing", "extra", "bad_bytes"]))
    def unmask(self, node, how):
        if node not in self.requests:
            self.deliver(self.server.receive_unmask, node, UnmaskReply())
            return
        client = self.clients[node]
        if client._stage != "unmask":
            return
        reply = client.unmask(self.requests[node])
        if how == "missing":
            bad = UnmaskReply(dict(list(reply.seed_shares.items())[1:]), reply.key_shares)
        elif how == "extra":
            bad = UnmaskReply({**reply.seed_shares, N + 7: bytes(36)}, reply.key_shares)
        elif how == "bad_bytes":
            bad = UnmaskReply({k: v[:-1] for k, v in reply.seed_shares.items()}, reply.key_shares)
        else:
            bad = None
        if bad is not None:
            self.deliver(self.server.receive_unmask, node, bad)
        self.deliver(self.server.receive_unmask, node, reply)

    @rule(early=st.integers(0, 31))
    def finish(self, early):
        if early != 17 and len(self.server._replies) < N - 1:
            return  # most closes wait for the stage to fill; one in 32 comes early
        result = self.close(self.server.finish)
        if result is not None:
            expected = np.zeros(LENGTH, np.uint32)
            for node in result.survivors:
                expected += self.inputs[node]
            np.testing.assert_array_equal(result.total, expected)
            assert len(result.survivors) >= THRESHOLD
            self.result = result


@pytest.mark.timeout(300)
def test_the_secagg_server_survives_malformed_and_out_of_order_messages():
    run_state_machine_as_test(SecAggServerMachine, settings=settings(
        max_examples=80, stateful_step_count=60, deadline=None, suppress_health_check=list(HealthCheck)))
