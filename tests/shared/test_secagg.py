"""Secure aggregation's pure core: the server learns the right sum, and nothing it should not.

Every round runs the real client and server state machines with the real primitives
(X25519, AES-GCM, Shamir, AES-CTR); only the transport is a loop in this process.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedser_shared.errors import (
    BelowThresholdError,
    MalformedShareError,
    MaskedInputError,
    SecAggStageError,
    SumOutOfBoundsError,
    UnmaskRefusedError,
)
from fedser_shared.secagg import (
    KeyAdvert,
    RoundSetup,
    SecAggClient,
    SecAggServer,
    UnmaskRequest,
    VectorLayout,
    bytes_per_client,
    crypto,
    decode,
    encode,
    secure_sum,
    threshold_for,
)

SHAPES = {"delta.w": (40, 30), "delta.b": (30,), "dc.w": (40, 30), "dc.b": (30,)}
MAX_WEIGHT = 10_000


def make_updates(n: int, seed: int = 0) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    rng = np.random.default_rng(seed)
    updates = {f"client{i:02d}": {name: rng.normal(0, 0.02, shape).astype(np.float32) for name, shape in SHAPES.items()}
               for i in range(n)}
    return updates, {name: int(rng.integers(10, 400)) for name in updates}


def weighted_sums(updates, n_samples, names) -> dict[str, np.ndarray]:
    return {tensor: sum((n_samples[c] if tensor.startswith("delta.") else 1) * updates[c][tensor].astype(np.float64)
                        for c in names) for tensor in SHAPES}


def run(n: int, drop_before=None, degree=None, fraction=0.6, seed=0):
    updates, n_samples = make_updates(n, seed)
    layout = VectorLayout.of(SHAPES, n, MAX_WEIGHT, 10.0, 100.0)
    rng = np.random.default_rng(seed + 1)
    quantised = {name: encode(u, n_samples[name], layout, rng) for name, u in updates.items()}
    threshold = threshold_for(n, degree, fraction)
    result = secure_sum(quantised, threshold, degree, graph_seed=seed, context=b"round-1", drop_before=drop_before)
    survivors = [name for index, name in enumerate(sorted(updates)) if index + 1 in result.result.survivors]
    return decode(result.result.total, layout, len(survivors)), updates, n_samples, survivors, result


def assert_is_sum(decoded, updates, n_samples, survivors):
    expected = weighted_sums(updates, n_samples, survivors)
    for tensor, value in expected.items():
        # unbiased stochastic rounding: each client is off by less than one quantum per element
        np.testing.assert_allclose(decoded.sums[tensor], value, atol=len(survivors) * 1e-3, rtol=0)
    assert decoded.weight_total == sum(n_samples[c] for c in survivors)
    assert decoded.n_trained == len(survivors)


@pytest.mark.parametrize("n", [3, 4, 7, 10])
def test_the_server_learns_the_weighted_sum_of_every_update(n):
    decoded, updates, n_samples, survivors, _ = run(n)
    assert survivors == sorted(updates)
    assert_is_sum(decoded, updates, n_samples, survivors)


def test_the_masked_inputs_the_server_sees_look_nothing_like_the_updates():
    updates, n_samples = make_updates(3)
    layout = VectorLayout.of(SHAPES, 3, MAX_WEIGHT, 10.0, 100.0)
    rng = np.random.default_rng(1)
    quantised = {name: encode(u, n_samples[name], layout, rng) for name, u in updates.items()}
    server = SecAggServer(3, 2, None, 0, b"r", layout.length)
    clients = {node: SecAggClient(RoundSetup(node, 2, b"r", layout.length)) for node in (1, 2, 3)}
    for node, client in clients.items():
        server.receive_advert(node, client.advertise())
    for node, peers in server.close_advertise().items():
        server.receive_shares(node, clients[node].share_keys(peers))
    forwarded = server.close_shares()
    name = sorted(updates)[0]
    masked = clients[1].masked_input(quantised[name], forwarded[1])
    # a small signed update becomes uniform noise over the 32-bit range
    assert np.abs(quantised[name][:-2].view(np.int32)).max() < 2**31 // 100
    assert np.abs(masked[:-2].view(np.int32).astype(np.int64)).mean() > 2**29


@pytest.mark.parametrize("degree", [2, 4])
def test_secagg_plus_with_a_sparse_neighbour_graph_gives_the_same_sum(degree):
    decoded, updates, n_samples, survivors, result = run(10, degree=degree)
    assert_is_sum(decoded, updates, n_samples, survivors)
    # each client exchanged keys and shares with `degree` neighbours, not with all 9 others
    assert result.traffic["client00"].received == bytes_per_client(1, degree).received


@pytest.mark.parametrize("stage", ["advertise", "share", "mask"])
def test_a_round_with_up_to_n_minus_t_dropouts_still_sums_the_survivors(stage):
    n = 10
    threshold = threshold_for(n, None, 0.6)  # 6 of 10
    drops = {f"client{i:02d}": stage for i in range(n - threshold)}
    decoded, updates, n_samples, survivors, _ = run(n, drop_before=drops)
    assert survivors == sorted(set(updates) - set(drops))
    assert_is_sum(decoded, updates, n_samples, survivors)


def test_dropouts_during_unmasking_are_tolerated_while_enough_shares_come_back():
    drops = {"client01": "mask", "client03": "unmask"}
    decoded, updates, n_samples, survivors, _ = run(7, drop_before=drops)
    # client03 sent its masked input, then left: its input is in the sum, its seed rebuilt from shares
    assert "client03" in survivors and "client01" not in survivors
    assert_is_sum(decoded, updates, n_samples, survivors)


@pytest.mark.parametrize("stage", ["advertise", "share", "mask", "unmask"])
def test_below_the_threshold_the_round_is_refused_and_never_unmasked(stage):
    n = 5
    threshold = threshold_for(n, None, 0.6)  # 3 of 5
    drops = {f"client{i:02d}": stage for i in range(n - threshold + 1)}
    with pytest.raises(BelowThresholdError):
        run(n, drop_before=drops)


def _round_to_mask(n=4, threshold=3):
    updates, n_samples = make_updates(n)
    layout = VectorLayout.of(SHAPES, n, MAX_WEIGHT, 10.0, 100.0)
    rng = np.random.default_rng(1)
    server = SecAggServer(n, threshold, None, 0, b"r", layout.length)
    clients = {node: SecAggClient(RoundSetup(node, threshold, b"r", layout.length)) for node in range(1, n + 1)}
    for node, client in clients.items():
        server.receive_advert(node, client.advertise())
    for node, peers in server.close_advertise().items():
        server.receive_shares(node, clients[node].share_keys(peers))
    inputs = {node: encode(updates[name], n_samples[name], layout, rng) for node, name in enumerate(sorted(updates), 1)}
    return server, clients, server.close_shares(), inputs


def _round_to_unmask(n=4, threshold=3):
    server, clients, forwarded, inputs = _round_to_mask(n, threshold)
    for node, shares in forwarded.items():
        server.receive_masked(node, clients[node].masked_input(inputs[node], shares))
    return server, clients


def test_a_server_that_claims_a_live_client_dropped_gets_no_key_share():
    server, clients = _round_to_unmask()
    requests = server.close_masked()
    # the server asks client 1 for client 2's seed share (2 sent its input) and for its key share too
    false = UnmaskRequest(requests[1].seed_of, requests[1].key_of | {2})
    with pytest.raises(UnmaskRefusedError, match="both"):
        clients[1].unmask(false)


def test_a_client_reveals_only_once_per_round():
    server, clients = _round_to_unmask()
    requests = server.close_masked()
    clients[1].unmask(requests[1])
    with pytest.raises(SecAggStageError):
        clients[1].unmask(UnmaskRequest(frozenset(), frozenset({2})))


def test_a_client_never_reveals_its_own_mask_key():
    server, clients = _round_to_unmask()
    with pytest.raises(UnmaskRefusedError, match="own mask key"):
        clients[1].unmask(UnmaskRequest(frozenset(), frozenset({1})))


def test_a_malformed_sealed_share_is_refused_by_the_server():
    server = SecAggServer(3, 2, None, 0, b"r", 10)
    clients = {node: SecAggClient(RoundSetup(node, 2, b"r", 10)) for node in (1, 2, 3)}
    for node, client in clients.items():
        server.receive_advert(node, client.advertise())
    peers = server.close_advertise()
    shares = clients[1].share_keys(peers[1])
    short = [dataclasses.replace(shares[0], ciphertext=shares[0].ciphertext[:-1]), shares[1]]
    with pytest.raises(MalformedShareError, match="bytes"):
        server.receive_shares(1, short)
    with pytest.raises(MalformedShareError, match="one share to each"):
        server.receive_shares(1, shares[:1])
    server.receive_shares(1, shares)  # a corrected message is still taken while the stage is open


def test_a_tampered_sealed_share_does_not_authenticate_at_its_recipient():
    clients = {node: SecAggClient(RoundSetup(node, 2, b"r", 10)) for node in (1, 2)}
    adverts = {node: c.advertise() for node, c in clients.items()}
    (share,) = clients[1].share_keys({2: adverts[2]})
    clients[2].share_keys({1: adverts[1]})
    flipped = share.ciphertext[:20] + bytes([share.ciphertext[20] ^ 1]) + share.ciphertext[21:]
    with pytest.raises(MalformedShareError, match="authenticate"):
        clients[2].masked_input(np.zeros(10, np.uint32), [dataclasses.replace(share, ciphertext=flipped)])


def test_a_masked_input_of_the_wrong_length_or_type_is_refused():
    server, clients, forwarded, inputs = _round_to_mask()
    with pytest.raises(MaskedInputError, match=f"{len(inputs[1])} uint32"):
        server.receive_masked(1, np.zeros(len(inputs[1]) + 1, np.uint32))
    with pytest.raises(MaskedInputError):
        server.receive_masked(1, np.zeros(len(inputs[1]), np.float32))
    with pytest.raises(MaskedInputError):
        clients[1].masked_input(inputs[1][:-1], forwarded[1])
    server.receive_masked(1, np.zeros(len(inputs[1]), np.uint32))  # a corrected one is taken
    with pytest.raises(SecAggStageError, match="already"):
        server.receive_masked(1, np.zeros(len(inputs[1]), np.uint32))


def test_messages_out_of_order_are_refused():
    server = SecAggServer(3, 2, None, 0, b"r", 10)
    with pytest.raises(SecAggStageError):
        server.receive_masked(1, np.zeros(10, np.uint32))
    with pytest.raises(SecAggStageError):
        server.finish()
    client = SecAggClient(RoundSetup(1, 2, b"r", 10))
    with pytest.raises(SecAggStageError):
        client.masked_input(np.zeros(10, np.uint32), [])


def test_bad_keys_and_unexpected_senders_are_typed_errors():
    server = SecAggServer(3, 2, None, 0, b"r", 10)
    with pytest.raises(MalformedShareError):
        server.receive_advert(1, KeyAdvert(b"short", bytes(32)))
    with pytest.raises(SecAggStageError):
        server.receive_advert(4, SecAggClient(RoundSetup(1, 2, b"r", 10)).advertise())
    advert = SecAggClient(RoundSetup(1, 2, b"r", 10)).advertise()
    server.receive_advert(1, advert)
    with pytest.raises(SecAggStageError, match="already"):
        server.receive_advert(1, advert)


def test_a_wrong_share_in_the_unmasking_is_refused_or_caught_by_the_key_check():
    server, clients = _round_to_unmask(n=4, threshold=3)
    requests = server.close_masked()
    reply = clients[1].unmask(requests[1])
    owner = next(iter(reply.seed_shares))
    wrong_index = crypto.Share(99, bytes(16), bytes(16)).to_bytes()
    with pytest.raises(MalformedShareError, match="index"):
        server.receive_unmask(1, dataclasses.replace(reply, seed_shares={**reply.seed_shares, owner: wrong_index}))
    with pytest.raises(MalformedShareError, match="other peers"):
        server.receive_unmask(1, dataclasses.replace(reply, seed_shares={}))


def test_a_garbled_sum_is_refused_not_used():
    layout = VectorLayout.of(SHAPES, 4, MAX_WEIGHT, 10.0, 100.0)
    garbage = np.random.default_rng(0).integers(0, 2**32, layout.length, dtype=np.uint64).astype(np.uint32)
    with pytest.raises(SumOutOfBoundsError):
        decode(garbage, layout, 4)
    with pytest.raises(MaskedInputError):
        decode(garbage[:-1], layout, 4)


def test_clients_clip_before_quantising_so_one_huge_update_cannot_dominate():
    layout = VectorLayout.of(SHAPES, 2, MAX_WEIGHT, 1.0, 100.0)
    huge = {name: np.full(shape, 1e6, np.float32) for name, shape in SHAPES.items()}
    quantised = encode(huge, 100, layout, np.random.default_rng(0))
    decoded = decode(quantised, layout, 1)
    delta_norm = np.sqrt(sum(np.sum(v ** 2) for n, v in decoded.sums.items() if n.startswith("delta.")))
    assert delta_norm == pytest.approx(100 * 1.0, rel=1e-3)  # n_samples x the bound


def test_an_empty_participation_adds_no_weight_and_no_count():
    updates, _ = make_updates(1)
    layout = VectorLayout.of(SHAPES, 1, MAX_WEIGHT, 10.0, 100.0)
    decoded = decode(encode(updates["client00"], 0, layout, np.random.default_rng(0)), layout, 1)
    assert decoded.weight_total == 0 and decoded.n_trained == 0
    assert all(not v.any() for v in decoded.sums.values())


def test_a_noise_hook_sees_the_clipped_values_before_rounding():
    updates, _ = make_updates(1)
    layout = VectorLayout.of(SHAPES, 1, MAX_WEIGHT, 10.0, 100.0)
    seen = {}

    def add_one(values):
        seen.update(values)
        return {name: v + 0.5 for name, v in values.items()}

    decoded = decode(encode(updates["client00"], 0, layout, np.random.default_rng(0), transform=add_one), layout, 1,
                     check_norm=False)
    assert set(seen) == set(SHAPES)
    np.testing.assert_allclose(decoded.sums["dc.b"], 0.5, atol=1e-6)


def test_bytes_per_client_counts_keys_shares_and_the_masked_vector():
    traffic = bytes_per_client(275_000, 9)
    assert 4 * 275_000 < traffic.sent < 4 * 275_000 + 5_000
    assert traffic.received < 5_000
