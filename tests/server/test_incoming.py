"""An update checked chunk by chunk as it streams in: only a whole, intact, well-formed update
reaches the strategy, whatever the chunking; problems are named only after the checksum held."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedser_server.core.strategy import FedAvg
from fedser_server.engine.incoming import IncomingUpdate
from fedser_shared import codec
from fedser_shared.errors import CorruptBlobError, InvalidUpdateError

W = {"w.a": np.arange(6, dtype=np.float32).reshape(2, 3), "w.b": np.array([0.5, -1.5, 2.0], np.float32)}
EXPECTED = FedAvg().expected_update(W)


def _update(**overrides: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    update = {"delta.a": rng.normal(size=(2, 3)).astype(np.float32), "delta.b": rng.normal(size=3).astype(np.float32)}
    update.update(overrides)
    return update


def _receive(tmp_path: Path, data: bytes, chunk_size: int, sha256: bytes | None = None):
    with IncomingUpdate(len(data), EXPECTED, tmp_path / "incoming") as incoming:
        for chunk in codec.iter_chunks(data, chunk_size):
            incoming.feed(chunk)
        return incoming.finish(hashlib.sha256(data).digest() if sha256 is None else sha256)


def _read_back(checked, block_bytes: int) -> dict[str, np.ndarray]:
    out = {name: np.zeros(spec.shape, spec.dtype).reshape(-1) for name, spec in EXPECTED.items()}
    for name, start, values in checked.runs(block_bytes):
        out[name][start : start + values.size] = values
    checked.discard()
    return {name: value.reshape(EXPECTED[name].shape) for name, value in out.items()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 400), st.sampled_from([4, 8, 12, 4096]))
def test_any_chunking_reads_back_the_exact_update(tmp_path: Path, chunk_size: int, block_bytes: int) -> None:
    update = _update()
    read = _read_back(_receive(tmp_path, codec.encode(update), chunk_size), block_bytes)
    for name, value in update.items():
        np.testing.assert_array_equal(read[name], value)


@pytest.mark.parametrize("chunk_size", [1, 3, 4096])
def test_a_nan_cut_by_a_chunk_boundary_is_found(tmp_path: Path, chunk_size: int) -> None:
    bad = _update()["delta.b"].copy()
    bad[1] = np.nan
    with pytest.raises(InvalidUpdateError, match="NaN"):
        _receive(tmp_path, codec.encode(_update(**{"delta.b": bad})), chunk_size)


@pytest.mark.parametrize("bad, message", [
    ({"delta.a": np.zeros((3, 2), np.float32)}, "shape"),
    ({"delta.b": np.zeros(3, np.float64)}, "dtype"),
    ({"delta.c": np.zeros(3, np.float32)}, "names differ"),
    ({"delta.a": np.full((2, 3), np.inf, np.float32)}, "infinite"),
])
def test_a_malformed_update_is_refused_naming_the_problem(tmp_path: Path, bad: dict, message: str) -> None:
    with pytest.raises(InvalidUpdateError, match=message):
        _receive(tmp_path, codec.encode(_update(**bad)), 16)


def test_a_flipped_header_byte_is_a_checksum_error_not_a_parse_error(tmp_path: Path) -> None:
    data = codec.encode(_update())
    digest = hashlib.sha256(data).digest()
    for position in (0, 5, 20):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x40
        with pytest.raises(CorruptBlobError, match="checksum"):
            _receive(tmp_path, bytes(corrupt), 64, sha256=digest)


def test_garbage_with_a_matching_checksum_is_refused_as_unparseable(tmp_path: Path) -> None:
    data = b"\x10" + b"\0" * 7 + b"not json at all!" + b"\0" * 24
    with pytest.raises(CorruptBlobError, match="cannot parse"):
        _receive(tmp_path, data, 7)


def test_short_long_and_oversized_streams_are_refused(tmp_path: Path) -> None:
    data = codec.encode(_update())
    with IncomingUpdate(len(data), EXPECTED, tmp_path) as incoming:
        incoming.feed(memoryview(data)[:-1])
        with pytest.raises(CorruptBlobError, match="truncated"):
            incoming.finish(hashlib.sha256(data).digest())
        with pytest.raises(CorruptBlobError, match="more than the announced"):
            incoming.feed(memoryview(data)[-2:])
    huge_header = (2**20 + 8).to_bytes(8, "little") + b" " * 64
    with pytest.raises(CorruptBlobError, match="exceeds the limit"):
        _receive(tmp_path, huge_header + b" " * 2**20, 4096)


def _receive_measured(data: bytes, chunk_size: int):
    """As the server receives a small update: parked in memory, the delta tensors' norm measured."""
    with IncomingUpdate(len(data), EXPECTED, None, measure_prefix="delta.") as incoming:
        for chunk in codec.iter_chunks(data, chunk_size):
            incoming.feed(chunk)
        return incoming.finish(hashlib.sha256(data).digest())


@pytest.mark.parametrize("value, message", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
@pytest.mark.parametrize("chunk_size", [5, 4096])
def test_a_measured_tensor_with_a_nan_or_an_infinity_is_refused(value: float, message: str, chunk_size: int) -> None:
    bad = _update()["delta.a"].copy()
    bad[1, 2] = value
    with pytest.raises(InvalidUpdateError, match=message):
        _receive_measured(codec.encode(_update(**{"delta.a": bad})), chunk_size)


@pytest.mark.parametrize("chunk_size", [5, 4096])
def test_finite_values_whose_squares_overflow_are_accepted_and_read_back_exactly(chunk_size: int) -> None:
    huge = _update(**{"delta.b": np.array([3e38, -3e38, 1e30], np.float32)})
    checked = _receive_measured(codec.encode(huge), chunk_size)
    assert checked.norm == np.inf  # the sum of squares overflows float32: the norm bound sees an infinite norm
    read = _read_back(checked, 8)
    for name, value in huge.items():
        np.testing.assert_array_equal(read[name], value)


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_an_update_parked_in_memory_reads_back_exactly_whatever_the_chunking(chunk_size: int) -> None:
    update = _update()
    checked = _receive_measured(codec.encode(update), chunk_size)
    assert checked.norm == pytest.approx(np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in update.values())),
                                         rel=1e-6)
    read = _read_back(checked, 12)
    for name, value in update.items():
        np.testing.assert_array_equal(read[name], value)
