"""Tests for shared/protocol/chunks.py, shared/protocol/codecs/ and shared/protocol/blobs.py."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol.blobs import EncodedBlob, decode_blob, encode_blob
from fedstream.shared.protocol.chunks import (
    Completed,
    Reassembler,
    chunk_views,
    make_header,
    missing_ranges,
)
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.messages import BlobHeader, TensorSpec

# 3x4 weights + 4 biases = 16 float32 = 64 bytes; with 10-byte chunks that is 7 chunks, the
# last one 4 bytes long.
_SPEC = (TensorSpec(name="w", shape=(3, 4)), TensorSpec(name="b", shape=(4,)))
_CHUNK = 10


def _tensors(seed: int = 0) -> list[torch.Tensor]:
    """Seeded random tensors matching `_SPEC`."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s.shape, generator=gen) for s in _SPEC]


def _encoded(seed: int = 0) -> EncodedBlob:
    """Seeded tensors encoded as f32 and cut into `_CHUNK`-byte chunks."""
    return encode_blob(_tensors(seed), _SPEC, codec="f32", chunk_size=_CHUNK)


def _reassembler(*, max_blob: int = 1024, max_total: int = 4096,
                 timeout_s: float = 5.0) -> Reassembler:
    return Reassembler(max_blob_bytes=max_blob, max_total_bytes=max_total, timeout_s=timeout_s)


def _feed(parts: Reassembler, header: BlobHeader, chunks: list[tuple[int, bytes]],
          now: float = 0.0) -> list[Completed]:
    """Add chunks in order as their owner does: none after the blob completed (the owner's
    record, not the reassembler, knows it is done); return what the reassembler handed back."""
    done = []
    for index, data in chunks:
        if done:
            break
        got = parts.add(header, index, data, now)
        if got is not None:
            done.append(got)
    return done


def _bits(tensor: torch.Tensor) -> list[int]:
    """The float32 bit patterns of a tensor, so comparisons are bit-exact."""
    return tensor.contiguous().view(torch.int32).reshape(-1).tolist()


def test_header_for_the_example_blob() -> None:
    """64 bytes in 10-byte chunks make 7 chunks, the last one holding the 4 remaining bytes."""
    # Prepare / Execute
    blob = _encoded()

    # Assert
    assert blob.header.size == 64
    assert blob.header.count == 7
    assert [len(c) for c in blob.chunks] == [10, 10, 10, 10, 10, 10, 4]
    assert blob.header.chunk_span(6) == (60, 4)
    assert blob.header.codec == "f32"
    assert blob.header.spec == _SPEC


@pytest.mark.parametrize(
    ("size", "chunk_size", "count"),
    [(64, 10, 7), (64, 64, 1), (64, 65, 1), (64, 32, 2), (64, 63, 2), (1, 1, 1)],
)
def test_make_header_counts_chunks(size: int, chunk_size: int, count: int) -> None:
    """The chunk count is `ceil(size / chunk_size)` and the views cover the blob exactly."""
    # Prepare
    blob = bytes(range(size))

    # Execute
    header = make_header(blob, blob_id="b", chunk_size=chunk_size, codec="f32", spec=_SPEC)
    views = chunk_views(blob, header)

    # Assert
    assert header.count == count
    assert b"".join(views) == blob


@pytest.mark.parametrize("chunk_size", [0, -1])
def test_make_header_rejects_bad_chunk_size(chunk_size: int) -> None:
    """A chunk size that is not positive is a caller error."""
    # Prepare / Execute / Assert
    with pytest.raises(ValueError, match="chunk_size"):
        make_header(b"abc", blob_id="b", chunk_size=chunk_size, codec="f32", spec=_SPEC)


def test_round_trip_with_shuffled_and_duplicated_chunks() -> None:
    """Chunks arriving shuffled and duplicated reassemble once into bit-exact tensors."""
    # Prepare
    tensors = _tensors(seed=1)
    blob = encode_blob(tensors, _SPEC, codec="f32", chunk_size=_CHUNK)
    rng = random.Random(42)
    chunks = [(i, bytes(c)) for i, c in enumerate(blob.chunks)]
    chunks += rng.choices(chunks, k=5)  # duplicates, before or after completion
    rng.shuffle(chunks)
    parts = _reassembler()

    # Execute
    done = _feed(parts, blob.header, chunks)
    decoded = decode_blob(done[0].header, done[0].blob, _SPEC)

    # Assert
    assert len(done) == 1
    assert done[0].blob == b"".join(bytes(c) for c in blob.chunks)
    assert [t.shape for t in decoded] == [t.shape for t in tensors]
    assert [_bits(t) for t in decoded] == [_bits(t) for t in tensors]
    assert parts.held_bytes == 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_any_order_completes_on_the_last_new_chunk(seed: int) -> None:
    """Whatever the order, the blob completes exactly when its last missing chunk arrives."""
    # Prepare
    blob = _encoded(seed)
    order = list(range(blob.header.count))
    random.Random(seed).shuffle(order)
    parts = _reassembler()

    # Execute
    results = [parts.add(blob.header, i, bytes(blob.chunks[i]), 0.0) for i in order]

    # Assert
    assert results[:-1] == [None] * (len(order) - 1)
    assert results[-1] is not None


def test_flipped_byte_is_bad_hash_and_nothing_is_returned() -> None:
    """One flipped byte fails the sha256 check: bad_hash, no blob, and no memory kept."""
    # Prepare
    blob = _encoded()
    chunks = [(i, bytes(c)) for i, c in enumerate(blob.chunks)]
    broken = bytearray(chunks[2][1])
    broken[3] ^= 0x01
    chunks[2] = (2, bytes(broken))
    parts = _reassembler()

    # Execute
    early = _feed(parts, blob.header, chunks[:-1])
    with pytest.raises(ProtocolError) as info:
        parts.add(blob.header, *chunks[-1], 0.0)

    # Assert
    assert early == []
    assert info.value.reason is Reason.BAD_HASH
    assert parts.held_bytes == 0
    assert not parts.holds(blob.header.blob_id)


def test_blob_can_be_resent_after_bad_hash() -> None:
    """After a bad_hash drop, a clean resend of the same blob completes."""
    # Prepare
    blob = _encoded()
    good = [(i, bytes(c)) for i, c in enumerate(blob.chunks)]
    bad = list(good)
    bad[0] = (0, bytes([good[0][1][0] ^ 0xFF]) + good[0][1][1:])
    parts = _reassembler()
    with pytest.raises(ProtocolError):
        _feed(parts, blob.header, bad)

    # Execute
    done = _feed(parts, blob.header, good)

    # Assert
    assert len(done) == 1
    assert done[0].blob == b"".join(data for _, data in good)


@pytest.mark.parametrize(
    ("index", "length"),
    [(0, 11), (0, 9), (6, 10), (6, 3), (3, 0)],
)
def test_chunk_of_wrong_length_is_size_mismatch(index: int, length: int) -> None:
    """A chunk whose length differs from its span in the header is size_mismatch."""
    # Prepare
    blob = _encoded()
    parts = _reassembler()

    # Execute
    with pytest.raises(ProtocolError) as info:
        parts.add(blob.header, index, b"\x00" * length, 0.0)

    # Assert
    assert info.value.reason is Reason.SIZE_MISMATCH


@pytest.mark.parametrize(
    "change",
    [{"codec": "int8"}, {"sha256": b"\x00" * 32}, {"chunk_size": 16, "count": 4},
     {"spec": (TensorSpec(name="w", shape=(16,)),)}],
    ids=["codec", "sha256", "chunking", "spec"],
)
def test_conflicting_header_is_rejected(change: dict[str, object]) -> None:
    """A chunk whose header differs from the one the blob started with is header_conflict."""
    # Prepare
    blob = _encoded()
    other = dataclasses.replace(blob.header, **change)
    parts = _reassembler()
    parts.add(blob.header, 0, bytes(blob.chunks[0]), 0.0)

    # Execute
    with pytest.raises(ProtocolError) as info:
        parts.add(other, 1, bytes(blob.chunks[1]), 0.0)

    # Assert
    assert info.value.reason is Reason.HEADER_CONFLICT


def test_blob_over_max_blob_bytes_is_oversized() -> None:
    """A 64-byte blob is refused by a reassembler limited to 63-byte blobs."""
    # Prepare
    blob = _encoded()
    parts = _reassembler(max_blob=63)

    # Execute
    with pytest.raises(ProtocolError) as info:
        parts.add(blob.header, 0, bytes(blob.chunks[0]), 0.0)

    # Assert
    assert info.value.reason is Reason.OVERSIZED
    assert parts.held_bytes == 0


def test_total_bound_refuses_second_blob_while_first_is_pending() -> None:
    """With room for one 64-byte blob, a second one is oversized until the first completes."""
    # Prepare
    first, second = _encoded(seed=1), _encoded(seed=2)
    parts = _reassembler(max_blob=64, max_total=100)
    parts.add(first.header, 0, bytes(first.chunks[0]), 0.0)

    # Execute
    with pytest.raises(ProtocolError) as info:
        parts.add(second.header, 0, bytes(second.chunks[0]), 0.0)
    held_while_pending = parts.held_bytes
    _feed(parts, first.header, [(i, bytes(c)) for i, c in enumerate(first.chunks)][1:])
    after = parts.add(second.header, 0, bytes(second.chunks[0]), 0.0)

    # Assert
    assert info.value.reason is Reason.OVERSIZED
    assert held_while_pending == 64
    assert after is None
    assert parts.held_bytes == 64


@pytest.mark.parametrize(
    ("touched", "now", "expired"),
    [(0.0, 5.0, False), (0.0, 5.1, True), (3.0, 8.0, False), (3.0, 8.5, True)],
)
def test_expire_drops_idle_partials(touched: float, now: float, expired: bool) -> None:
    """A partial idle for longer than the timeout (5 s) since its last chunk is dropped."""
    # Prepare
    blob = _encoded()
    parts = _reassembler(timeout_s=5.0)
    parts.add(blob.header, 0, bytes(blob.chunks[0]), 0.0)
    parts.add(blob.header, 1, bytes(blob.chunks[1]), touched)

    # Execute
    dropped = parts.expire(now)

    # Assert
    assert dropped == ([blob.header.blob_id] if expired else [])
    assert parts.held_bytes == (0 if expired else 64)
    assert parts.holds(blob.header.blob_id) is not expired


def test_completed_blob_is_forgotten_and_a_late_duplicate_starts_afresh() -> None:
    """The reassembler keeps nothing of a blob it handed on: a late chunk of it starts a new
    partial (its owner, who recorded the verdict, is the one to ignore it)."""
    # Prepare
    blob = _encoded()
    parts = _reassembler()
    _feed(parts, blob.header, [(i, bytes(c)) for i, c in enumerate(blob.chunks)])
    held_after = parts.held_bytes

    # Execute
    late = parts.add(blob.header, 3, bytes(blob.chunks[3]), 1.0)

    # Assert
    assert held_after == 0
    assert late is None
    assert parts.holds(blob.header.blob_id)


def test_idle_reports_a_partial_once_per_idle_spell() -> None:
    """A partial silent for `after_s` is reported once; a new chunk starts a new spell."""
    # Prepare
    blob = _encoded()
    parts = _reassembler(timeout_s=60.0)
    parts.add(blob.header, 0, bytes(blob.chunks[0]), 0.0)

    # Execute
    early = parts.idle(4.0, after_s=5.0)
    first = parts.idle(5.0, after_s=5.0)
    again = parts.idle(9.0, after_s=5.0)
    parts.add(blob.header, 1, bytes(blob.chunks[1]), 10.0)
    quiet = parts.idle(14.0, after_s=5.0)
    second = parts.idle(15.0, after_s=5.0)

    # Assert
    assert (early, again, quiet) == ([], [], [])
    assert first == second == [blob.header]


@pytest.mark.parametrize(("have", "count", "runs"), [
    ([], 3, ((0, 3),)),
    ([0, 1, 2], 3, ()),
    ([1], 4, ((0, 1), (2, 4))),
    ([0, 2, 4], 6, ((1, 2), (3, 4), (5, 6))),
])
def test_missing_ranges_lists_the_gaps_as_half_open_runs(
    have: list[int], count: int, runs: tuple[tuple[int, int], ...],
) -> None:
    """Indices not held, in [0, count), come out as sorted half-open runs."""
    # Execute / Assert
    assert missing_ranges(have, count) == runs


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_f32_decode_rejects_non_finite(bad: float) -> None:
    """f32 decoding refuses NaN and infinities anywhere in the blob."""
    # Prepare
    values = torch.cat([t.reshape(-1) for t in _tensors()])
    values[5] = bad
    buf = values.numpy().astype("<f4").tobytes()

    # Execute
    with pytest.raises(ProtocolError) as info:
        CODECS.build("f32").decode(buf, _SPEC)

    # Assert
    assert info.value.reason is Reason.NON_FINITE


@pytest.mark.parametrize("delta", [-4, -1, 1, 4])
def test_f32_decode_rejects_wrong_size(delta: int) -> None:
    """f32 decoding refuses a blob that is not exactly 4 bytes per weight of the spec."""
    # Prepare
    buf = b"\x00" * (64 + delta)

    # Execute
    with pytest.raises(ProtocolError) as info:
        CODECS.build("f32").decode(buf, _SPEC)

    # Assert
    assert info.value.reason is Reason.SIZE_MISMATCH


def test_f32_known_bytes() -> None:
    """f32 writes little-endian float32: 1.0 is 00 00 80 3f and -2.0 is 00 00 00 c0."""
    # Prepare
    spec = (TensorSpec(name="x", shape=(2,)),)
    codec = CODECS.build("f32")

    # Execute
    buf = codec.encode([torch.tensor([1.0, -2.0])])
    back = codec.decode(buf, spec)

    # Assert
    assert buf == bytes.fromhex("0000803f000000c0")
    assert back[0].tolist() == [1.0, -2.0]


def test_decode_blob_rejects_unknown_codec() -> None:
    """A verified blob naming a codec nobody registered is unknown_codec."""
    # Prepare
    blob = _encoded()
    header = dataclasses.replace(blob.header, codec="zstd-nope")
    data = b"".join(bytes(c) for c in blob.chunks)

    # Execute
    with pytest.raises(ProtocolError) as info:
        decode_blob(header, data, _SPEC)

    # Assert
    assert info.value.reason is Reason.UNKNOWN_CODEC


def test_decode_blob_rejects_other_spec() -> None:
    """A blob whose spec differs from the model's is spec_mismatch, even with the same size."""
    # Prepare
    blob = _encoded()
    data = b"".join(bytes(c) for c in blob.chunks)
    expected = (TensorSpec(name="w", shape=(4, 3)), TensorSpec(name="b", shape=(4,)))

    # Execute
    with pytest.raises(ProtocolError) as info:
        decode_blob(blob.header, data, expected)

    # Assert
    assert info.value.reason is Reason.SPEC_MISMATCH


def test_encode_blob_rejects_tensors_off_spec() -> None:
    """Encoding tensors whose shapes do not follow the spec is a caller error."""
    # Prepare
    tensors = list(reversed(_tensors()))

    # Execute / Assert
    with pytest.raises(ValueError, match="spec"):
        encode_blob(tensors, _SPEC, codec="f32", chunk_size=_CHUNK)


@pytest.mark.parametrize("name", CODECS.names())
def test_codec_registry_is_complete(name: str) -> None:
    """Every registered codec builds with no params, has a summary and round-trips a tensor."""
    # Prepare
    spec = (TensorSpec(name="x", shape=(2, 2)),)
    tensors = [torch.tensor([[0.5, -1.0], [2.0, 0.0]])]

    # Execute
    codec = CODECS.build(name)
    back = codec.decode(codec.encode(tensors), spec)

    # Assert
    assert CODECS.summary(name).strip()
    assert codec.name == name
    assert back[0].shape == (2, 2)
    if codec.lossless:
        assert torch.equal(back[0], tensors[0])


def test_codec_registry_lists_f32() -> None:
    """The lossless f32 codec is always registered."""
    # Prepare / Execute
    names = CODECS.names()

    # Assert
    assert "f32" in names
