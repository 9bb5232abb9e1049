import hashlib

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from fedser_shared import codec
from fedser_shared.checksum import Checksum, Digest, StreamHash
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


def test_garbage_with_a_matching_checksum_fails_to_parse_cleanly() -> None:
    data = b"not a safetensors blob at all"
    with pytest.raises(CorruptBlobError, match="cannot parse"):
        codec.decode(codec.assemble(iter([data]), len(data), hashlib.sha256(data).digest()))


def test_blobs_written_by_the_safetensors_package_decode_and_ours_load_there() -> None:
    from safetensors.numpy import load, save

    tensors = {**_tensors(), "i.steps": np.arange(5, dtype=np.int64), "s.scalar": np.ones((), np.float64),
               "e.empty": np.zeros((0, 3), np.float32), "m.mask": np.array([True, False])}
    for name, value in codec.decode(save(tensors)).items():
        np.testing.assert_array_equal(value, tensors[name])
        assert value.shape == tensors[name].shape and value.dtype == tensors[name].dtype
    for name, value in load(codec.encode(tensors)).items():
        np.testing.assert_array_equal(value, tensors[name])
        assert value.shape == tensors[name].shape


def test_a_received_blob_decodes_into_writable_views_of_the_receive_buffer() -> None:
    blob = codec.encode_blob(_tensors())
    buffer = codec.assemble(blob.chunks(), blob.total_len, blob.sha256)
    decoded = codec.decode(buffer)
    assert all(value.flags.writeable for value in decoded.values())
    assert all(np.shares_memory(value, np.frombuffer(buffer, np.uint8)) for value in decoded.values() if value.size)


def test_big_endian_arrays_are_written_little_endian() -> None:
    value = np.arange(6, dtype=">f4").reshape(2, 3)
    decoded = codec.decode(codec.encode({"w.x": value}))["w.x"]
    assert decoded.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(decoded, value)


def _with_header(header: dict, data: bytes) -> bytes:
    import json
    import struct

    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize("blob", [
    b"",
    b"\x00" * 7,
    (10**9).to_bytes(8, "little") + b"{}",
    _with_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),      # data too short
    _with_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12),     # bytes left over
    _with_header({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),      # shape vs offsets
    _with_header({"w": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),      # unknown dtype
    _with_header({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),     # negative dim
    _with_header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 16),    # overlap + gap
    _with_header({"w": {"dtype": "F32", "shape": [2]}}, b"\0" * 8),                               # no offsets
    _with_header([1, 2], b""),                                                                    # not an object
])
def test_malformed_headers_are_refused_with_a_clear_error(blob: bytes) -> None:
    with pytest.raises(CorruptBlobError, match="cannot parse"):
        codec.decode(blob)


def _assert_views_inside(tensors: dict[str, np.ndarray], data: bytes | bytearray) -> None:
    """A blob that parses yields arrays that fit in the bytes it was given, never past them."""
    assert all(isinstance(v, np.ndarray) for v in tensors.values())
    assert sum(v.nbytes for v in tensors.values()) <= len(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_a_corrupt_blob(data: bytes) -> None:
    try:
        tensors = codec.decode(data)
    except CorruptBlobError:
        return
    _assert_views_inside(tensors, data)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 300), st.integers(0, 10**6))
def test_flipping_any_header_byte_decodes_cleanly_or_is_refused(position: int, seed: int) -> None:
    data = bytearray(codec.encode(_tensors()))
    data[position % 300] ^= 1 + seed % 255
    try:
        tensors = codec.decode(data)
    except CorruptBlobError:
        return
    _assert_views_inside(tensors, data)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 70_000))
def test_streamed_parts_regrouped_in_chunks_are_the_encoded_blob(chunk_size: int) -> None:
    tensors = _tensors()
    runs = list(codec.chunked(codec.encode_parts(tensors), chunk_size))
    assert all(sum(len(p) for p in run) == chunk_size for run in runs[:-1])
    assert 0 < sum(len(p) for p in runs[-1]) <= chunk_size
    assert b"".join(bytes(p) for run in runs for p in run) == codec.encode(tensors)


def test_a_blob_layout_is_filled_in_place_and_serves_as_the_blob() -> None:
    tensors = _tensors()
    layout = codec.BlobLayout(tensors)
    buffer, views = layout.write(tensors)
    assert len(buffer) == layout.total_len and bytes(buffer) == codec.encode(tensors)
    assert all(np.shares_memory(v, np.frombuffer(buffer, np.uint8)) for v in views.values() if v.size)
    fresh, into = layout.allocate()
    for name, value in tensors.items():
        into[name][...] = value * 2
    for name, value in codec.decode(fresh).items():
        np.testing.assert_array_equal(value, tensors[name] * 2)


@pytest.mark.parametrize("kind", list(Checksum))
def test_a_stream_hash_is_the_digest_of_the_whole_stream(kind: Checksum) -> None:
    data = codec.encode(_tensors())
    hasher = StreamHash(kind, backlog=2)
    for chunk in codec.iter_chunks(data, 5000):
        hasher.update(chunk)
    expected = hashlib.sha256(data).digest() if kind is Checksum.SHA256 else xxhash.xxh3_128(data).digest()
    assert hasher.digest() == expected


def test_a_blob_assembled_under_xxh3_is_checked_against_xxh3() -> None:
    blob = codec.encode_blob(_tensors())
    assembled = codec.assemble(blob.chunks(1000), blob.total_len, Digest(Checksum.XXH3_128, blob.xxh3_128))
    np.testing.assert_array_equal(codec.decode(assembled)["w.a"], _tensors()["w.a"])
    flipped = bytearray(blob.data)
    flipped[-1] ^= 1
    with pytest.raises(CorruptBlobError, match="checksum mismatch \\(xxh3_128\\)"):
        codec.assemble(iter([bytes(flipped)]), blob.total_len, Digest(Checksum.XXH3_128, blob.xxh3_128))
    with pytest.raises(CorruptBlobError, match="must be 16 bytes"):
        Digest(Checksum.XXH3_128, blob.sha256)
