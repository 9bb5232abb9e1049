import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedser_shared import codec
from fedser_shared.errors import CorruptBlobError


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"w.a": rng.normal(size=(300, 257)).astype(np.float32), "w.b": rng.normal(size=7).astype(np.float32),
            "c.a": np.zeros((3, 3), np.float32)}


def _reassemble(blob: codec.Blob, chunks) -> dict[str, np.ndarray]:
    return codec.decode(codec.assemble(iter(chunks), blob.total_len, blob.sha256))


def test_round_trip_through_chunks_preserves_every_value() -> None:
    tensors = _tensors()
    blob = codec.encode_blob(tensors)
    chunks = [bytes(c) for c in blob.chunks(chunk_size=4096)]
    assert len(chunks) > 10 and max(len(c) for c in chunks) <= 4096
    decoded = _reassemble(blob, chunks)
    assert set(decoded) == set(tensors)
    for name, value in tensors.items():
        assert decoded[name].dtype == value.dtype
        np.testing.assert_array_equal(decoded[name], value)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 300))
def test_any_chunk_size_round_trips(chunk_size: int, n: int) -> None:
    tensors = {"w.x": np.arange(n, dtype=np.float32)}
    blob = codec.encode_blob(tensors)
    np.testing.assert_array_equal(_reassemble(blob, blob.chunks(chunk_size))["w.x"], tensors["w.x"])


def test_a_flipped_byte_in_one_chunk_is_detected() -> None:
    blob = codec.encode_blob(_tensors())
    chunks = [bytearray(c) for c in blob.chunks(chunk_size=65536)]
    chunks[3][100] ^= 0x01
    with pytest.raises(CorruptBlobError, match="checksum"):
        _reassemble(blob, chunks)


def test_missing_and_extra_bytes_are_detected() -> None:
    blob = codec.encode_blob(_tensors())
    chunks = [bytes(c) for c in blob.chunks(chunk_size=65536)]
    with pytest.raises(CorruptBlobError, match="truncated"):
        _reassemble(blob, chunks[:-1])
    with pytest.raises(CorruptBlobError, match="more than the announced"):
        _reassemble(blob, [*chunks, b"x"])


def test_announced_length_above_the_limit_is_refused_before_any_byte_arrives() -> None:
    with pytest.raises(CorruptBlobError, match="exceeds the limit"):
        codec.BlobAssembler(10_000_000, b"\0" * 32, max_len=1_000_000)


def test_garbage_with_a_matching_checksum_fails_to_parse_cleanly() -> None:
    data = b"not a safetensors blob at all"
    with pytest.raises(CorruptBlobError, match="cannot parse"):
        codec.decode(codec.assemble(iter([data]), len(data), hashlib.sha256(data).digest()))
