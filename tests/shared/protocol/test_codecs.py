"""Tests for shared/protocol/codecs/: one suite over every registered codec, per-codec bounds,
feedback."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest
import torch

from fedstream.shared.errors import ConfigError, ProtocolError, Reason
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.codecs.feedback import ErrorFeedback, shapes_spec
from fedstream.shared.protocol.messages import Spec, TensorSpec

NAMES = CODECS.names()
LOSSLESS = [n for n in NAMES if CODECS.build(n).lossless]
LOSSY = [n for n in NAMES if not CODECS.build(n).lossless]
F32_MAX = float(np.finfo(np.float32).max)
# 15 + 7 + 300 = 322 weights: several tensors, and more than one default int8 block.
_SPEC = (TensorSpec(name="w", shape=(3, 5)), TensorSpec(name="b", shape=(7,)),
         TensorSpec(name="k", shape=(2, 3, 50)))


def _tensors(spec: Spec = _SPEC, seed: int = 0) -> list[torch.Tensor]:
    """Seeded standard-normal float32 tensors shaped by `spec`."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*t.shape, generator=gen) for t in spec]


def _bits(tensor: torch.Tensor) -> list[int]:
    """The float32 bit patterns of a tensor, so comparisons are bit-exact."""
    return tensor.contiguous().view(torch.int32).reshape(-1).tolist()


def _reason(buf: bytes, spec: Spec, name: str, **params: object) -> Reason:
    """The reason `name` gives for refusing `buf` (fails the test if it accepts it)."""
    with pytest.raises(ProtocolError) as info:
        CODECS.build(name, **params).decode(buf, spec)
    return info.value.reason


def _vec(n: int) -> Spec:
    return (TensorSpec(name="x", shape=(n,)),)


# --- one suite over every codec -------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_codec_builds_with_defaults(name: str) -> None:
    """Every registered codec builds with no params, has a summary and says if it is lossless."""
    # Prepare / Execute
    codec = CODECS.build(name)

    # Assert
    assert CODECS.summary(name).strip()
    assert codec.name == name
    assert isinstance(codec.lossless, bool)


def test_all_units_are_registered() -> None:
    """Importing the package registers all six codecs."""
    # Prepare / Execute / Assert
    assert set(NAMES) >= {"f32", "f16", "bf16", "int8", "topk", "topk16"}


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_keeps_shapes_and_dtype(name: str) -> None:
    """Decoding gives float32 tensors with the spec's shapes, close to the input."""
    # Prepare
    codec = CODECS.build(name)
    tensors = _tensors(seed=1)

    # Execute
    back = codec.decode(codec.encode(tensors), _SPEC)

    # Assert
    assert [tuple(t.shape) for t in back] == [t.shape for t in _SPEC]
    assert all(t.dtype == torch.float32 for t in back)
    assert all(bool(torch.isfinite(t).all()) for t in back)


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_codecs_are_bit_exact(name: str) -> None:
    """Lossless codecs keep -0.0, subnormals and the largest finite float32 values bit for bit."""
    # Prepare
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    special = torch.tensor([0.0, -0.0, tiny, -tiny, 1e-40, 1.1754944e-38, F32_MAX, -F32_MAX,
                            1.0, -2.5])
    tensors = [special, *_tensors(seed=2)[1:]]
    spec = (TensorSpec(name="s", shape=(10,)), *_SPEC[1:])
    codec = CODECS.build(name)

    # Execute
    back = codec.decode(codec.encode(tensors), spec)

    # Assert
    assert [_bits(t) for t in back] == [_bits(t) for t in tensors]


@pytest.mark.parametrize("change", [-1, -2, "half", "all", 1, 4])
@pytest.mark.parametrize("name", NAMES)
def test_decode_rejects_truncated_and_extended_blobs(name: str, change: int | str) -> None:
    """A blob cut short or with bytes appended is size_mismatch."""
    # Prepare
    buf = CODECS.build(name).encode(_tensors())
    if change == "half":
        bad = buf[: len(buf) // 2]
    elif change == "all":
        bad = b""
    else:
        assert isinstance(change, int)
        bad = buf[:change] if change < 0 else buf + b"\x01" * change

    # Execute / Assert
    assert _reason(bad, _SPEC, name) is Reason.SIZE_MISMATCH


@pytest.mark.parametrize("name", NAMES)
def test_decode_of_garbage_raises_only_protocol_errors(name: str) -> None:
    """Random and mutated blobs give finite tensors or a ProtocolError, never another error."""
    # Prepare
    codec = CODECS.build(name)
    genuine = codec.encode(_tensors())
    rng = random.Random(f"garbage-{name}")
    reasons: set[Reason] = set()

    # Execute
    for case in range(200):
        if case % 2:
            buf = rng.randbytes(rng.choice([0, 1, 3, 4, 5, 8, len(genuine), rng.randrange(2000)]))
        else:
            mutated = bytearray(genuine)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            buf = bytes(mutated)
        try:
            back = codec.decode(buf, _SPEC)
        except ProtocolError as err:
            reasons.add(err.reason)
            continue
        # Assert (accepted cases)
        assert [tuple(t.shape) for t in back] == [t.shape for t in _SPEC]
        assert all(bool(torch.isfinite(t).all()) for t in back)

    # Assert
    assert Reason.SIZE_MISMATCH in reasons


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", NAMES)
def test_encode_rejects_non_finite(name: str, bad: float) -> None:
    """Every codec refuses to encode NaN or an infinity."""
    # Prepare
    tensors = _tensors()
    tensors[2][1, 2, 3] = bad

    # Execute / Assert
    with pytest.raises(ValueError, match="NaN or Inf"):
        CODECS.build(name).encode(tensors)


@pytest.mark.parametrize("name", NAMES)
def test_hostile_spec_is_refused_before_allocating(name: str) -> None:
    """A tiny blob for a 2^60-weight spec (or k = 2^32 - 1) is size_mismatch, not MemoryError."""
    # Prepare
    spec = (TensorSpec(name="huge", shape=(1 << 30, 1 << 30)),)
    buf = struct.pack("<II", 0xFFFFFFFF if name == "topk" else 256, 0) + b"\x00" * 8

    # Execute / Assert
    assert _reason(buf, spec, name) is Reason.SIZE_MISMATCH


# --- golden bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "values", "hexbytes"),
    [
        ("f16", {}, [1.0, -2.0], "003c00c0"),
        ("bf16", {}, [1.0, -2.0], "803f00c0"),
        # block 8, absmax 127 -> scale 1.0; -63.5 rounds half to even -> -64 (0xc0)
        ("int8", {"block_size": 8}, [127.0, -63.5, 0.0, 1.0], "08000000" "0000803f" "7fc00001"),
        # density 0.5 of 4 -> k=2: indices 1, 2 ascending, values -3.0, 2.0
        ("topk", {"density": 0.5}, [0.1, -3.0, 2.0, 0.5],
         "02000000" "0100000002000000" "000040c000000040"),
        # same k=2 in one block: count 2, u16 offsets 1, 2, f16 values -3.0 (0xc200), 2.0
        ("topk16", {"density": 0.5}, [0.1, -3.0, 2.0, 0.5],
         "02000000" "02000000" "01000200" "00c20040"),
    ],
)
def test_known_bytes(name: str, params: dict[str, object], values: list[float],
                     hexbytes: str) -> None:
    """Each codec writes the documented little-endian layout for a hand-worked example."""
    # Prepare
    codec = CODECS.build(name, **params)

    # Execute
    buf = codec.encode([torch.tensor(values)])

    # Assert
    assert buf.hex() == hexbytes


# --- per-codec accuracy and size ------------------------------------------------------------


@pytest.mark.parametrize(("name", "lo", "hi", "bound"),
                         [("f16", 2.0**-14, 65504.0, 2.0**-11), ("bf16", 1e-30, 1e30, 2.0**-8)])
def test_half_formats_relative_error(name: str, lo: float, hi: float, bound: float) -> None:
    """Normal-range values come back within the format's unit roundoff (f16 2^-11, bf16 2^-8)."""
    # Prepare
    rng = np.random.default_rng(3)
    mags = np.exp(rng.uniform(math.log(lo), math.log(hi), 20_000))
    x = torch.from_numpy((mags * rng.choice([-1.0, 1.0], mags.size)).astype(np.float32))
    codec = CODECS.build(name)

    # Execute
    back = codec.decode(codec.encode([x]), _vec(x.numel()))[0]

    # Assert
    rel = ((back.double() - x.double()).abs() / x.double().abs()).max()
    assert float(rel) <= bound


@pytest.mark.parametrize(("name", "value", "ok"),
                         [("f16", 65504.0, True), ("f16", -65505.0, False),
                          ("f16", 1e6, False), ("bf16", 3.3e38, True), ("bf16", 3.4e38, False),
                          ("topk16", -65504.0, True), ("topk16", 65505.0, False)])
def test_half_formats_refuse_overflow(name: str, value: float, ok: bool) -> None:
    """Values beyond the largest finite value are a ValueError; the maximum itself encodes."""
    # Prepare
    codec = CODECS.build(name)
    tensors = [torch.tensor([0.5, value])]

    # Execute / Assert
    if ok:
        assert codec.decode(codec.encode(tensors), _vec(2))[0][1] == pytest.approx(value, 0.01)
    else:
        with pytest.raises(ValueError, match="exceeds"):
            codec.encode(tensors)


@pytest.mark.parametrize("block_size", [8, 64, 256, 1000])
def test_int8_error_within_half_a_block_scale(block_size: int) -> None:
    """Each element is within scale/2 of its block (scales recomputed here); zero blocks stay 0."""
    # Prepare
    tensors = _tensors(seed=4)
    tensors[2][0, 0, :] = 0.0  # 50 zeros make at least one all-zero block for small sizes
    tensors[2][1] *= 1000.0  # blocks of very different magnitudes
    flat = torch.cat([t.reshape(-1) for t in tensors]).double()
    padded = torch.nn.functional.pad(flat, (0, -flat.numel() % block_size))
    scale = (padded.view(-1, block_size).abs().amax(dim=1) / 127).repeat_interleave(block_size)
    scale = scale[: flat.numel()]
    codec = CODECS.build("int8", block_size=block_size)

    # Execute
    back = torch.cat([t.reshape(-1) for t in codec.decode(codec.encode(tensors), _SPEC)]).double()

    # Assert
    err = (back - flat).abs()
    assert bool((err <= scale / 2 * (1 + 1e-6) + flat.abs() * 2.0**-22).all())
    assert bool((back[flat == 0] == 0).all())


def test_int8_decoder_reads_the_block_size_from_the_blob() -> None:
    """A blob encoded with block size 64 decodes with a default-built decoder."""
    # Prepare
    tensors = _tensors(seed=5)
    buf = CODECS.build("int8", block_size=64).encode(tensors)

    # Execute
    back = CODECS.build("int8").decode(buf, _SPEC)

    # Assert
    assert max(float((a - b).abs().max()) for a, b in zip(back, tensors, strict=True)) < 0.05


@pytest.mark.parametrize(("density", "n"), [(0.01, 1000), (0.1, 1000), (0.5, 7), (1.0, 9),
                                            (0.01, 5)])
def test_topk_keeps_exactly_the_k_largest(density: float, n: int) -> None:
    """topk keeps the k = max(1, ceil(density * n)) largest |x| exactly and zeroes the rest."""
    # Prepare
    x = torch.randn(n, generator=torch.Generator().manual_seed(6))
    k = max(1, math.ceil(density * n))
    largest = set(np.argsort(-x.abs().numpy())[:k].tolist())
    codec = CODECS.build("topk", density=density)

    # Execute
    back = codec.decode(codec.encode([x]), _vec(n))[0]

    # Assert
    assert set(torch.nonzero(back).reshape(-1).tolist()) == largest
    assert _bits(back[sorted(largest)]) == _bits(x[sorted(largest)])


@pytest.mark.parametrize(
    ("k", "indices", "values", "reason"),
    [(0, [], [], Reason.BAD_FRAME),
     (2, [1, 1], [1.0, 2.0], Reason.BAD_FRAME),
     (2, [2, 1], [1.0, 2.0], Reason.BAD_FRAME),
     (1, [4], [1.0], Reason.BAD_FRAME),
     (5, [0, 1, 2, 3, 4], [1.0] * 5, Reason.SIZE_MISMATCH),
     (2, [0, 1], [1.0, float("nan")], Reason.NON_FINITE)],
    ids=["k0", "duplicate", "descending", "out_of_range", "k_over_numel", "nan"],
)
def test_topk_decode_rejects_bad_content(k: int, indices: list[int], values: list[float],
                                         reason: Reason) -> None:
    """Bad k, repeated, unsorted or out-of-range indices and NaN values are each refused."""
    # Prepare
    buf = struct.pack(f"<I{len(indices)}I{len(values)}f", k, *indices, *values)

    # Execute / Assert
    assert _reason(buf, _vec(4), "topk") is reason


@pytest.mark.parametrize(
    ("block_size", "scale", "q", "reason"),
    [(0, 1.0, 1, Reason.BAD_FRAME), (7, 1.0, 1, Reason.BAD_FRAME),
     (65537, 1.0, 1, Reason.BAD_FRAME), (8, -1.0, 1, Reason.BAD_FRAME),
     (8, 1.0, -128, Reason.BAD_FRAME), (8, float("inf"), 1, Reason.NON_FINITE),
     (8, 3e38, 127, Reason.NON_FINITE)],
    ids=["bs0", "bs7", "bs65537", "negative_scale", "q-128", "inf_scale", "overflow"],
)
def test_int8_decode_rejects_bad_content(block_size: int, scale: float, q: int,
                                         reason: Reason) -> None:
    """A block size out of range, a negative or infinite scale and q = -128 are each refused."""
    # Prepare
    buf = struct.pack("<If4b", block_size, scale, q, 0, 0, 0)

    # Execute / Assert
    assert _reason(buf, _vec(4), "int8") is reason


@pytest.mark.parametrize(("name", "raw"), [("f16", "00fc0000"), ("bf16", "c07f0000")])
def test_half_formats_decode_rejects_non_finite(name: str, raw: str) -> None:
    """A half -inf or a bfloat16 NaN in the blob is non_finite."""
    # Prepare / Execute / Assert
    assert _reason(bytes.fromhex(raw), _vec(2), name) is Reason.NON_FINITE


@pytest.mark.parametrize(("name", "params", "per_weight", "extra"),
                         [("f16", {}, 2.0, 0), ("bf16", {}, 2.0, 0),
                          ("int8", {"block_size": 8}, 1 + 4 / 8, 4),
                          ("int8", {}, 1 + 4 / 256, 4), ("int8", {"block_size": 65536}, 1, 8)])
def test_compressed_sizes(name: str, params: dict[str, object], per_weight: float,
                          extra: int) -> None:
    """f16/bf16 take 2 bytes a weight; int8 1 byte plus 4 per block plus the 4-byte header."""
    # Prepare
    x = torch.randn(1024, 64, generator=torch.Generator().manual_seed(7))  # 65536 weights

    # Execute
    size = len(CODECS.build(name, **params).encode([x]))

    # Assert
    assert size == x.numel() * per_weight + extra


def test_topk_size_at_one_percent() -> None:
    """At density 0.01 a 100k tensor takes 4 + 8 * 1000 bytes, under 1/12 of its f32 size."""
    # Prepare
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(8))

    # Execute
    size = len(CODECS.build("topk").encode([x]))

    # Assert
    assert size == 4 + 8 * 1000
    assert size <= 4 * x.numel() / 12


# --- topk16 ---------------------------------------------------------------------------------


_BLOCK = 65536


def _topk16_size(spec: Spec, density: float) -> int:
    """The documented topk16 size: per tensor 4 + 4 * nblocks + 4k bytes."""
    return sum(4 + 4 * math.ceil(t.numel / _BLOCK) + 4 * max(1, math.ceil(density * t.numel))
               for t in spec)


def _topk16_blob(k: int, blocks: list[tuple[int, list[int], list[float]]], extra: int = 0) -> bytes:
    """A hand-built topk16 tensor: u32 k, per block (count, u16 offsets, f16 values); `extra`
    zero bytes appended (or, if negative, bytes cut off the end)."""
    buf = struct.pack("<I", k) + b"".join(
        struct.pack(f"<I{len(offsets)}H{len(values)}e", count, *offsets, *values)
        for count, offsets, values in blocks)
    return buf + b"\x00" * extra if extra >= 0 else buf[:extra]


@pytest.mark.parametrize(("density", "n"), [(0.01, 1000), (0.05, 1000), (0.5, 7), (1.0, 9),
                                            (0.01, 5), (0.05, 70_000)])
def test_topk16_keeps_exactly_the_k_largest(density: float, n: int) -> None:
    """topk16 keeps the k = max(1, ceil(density * n)) largest |x| and zeroes the rest."""
    # Prepare
    x = torch.randn(n, generator=torch.Generator().manual_seed(13))
    k = max(1, math.ceil(density * n))
    largest = set(np.argsort(-x.abs().numpy())[:k].tolist())  # seeded normals: no ties
    codec = CODECS.build("topk16", density=density)

    # Execute
    back = codec.decode(codec.encode([x]), _vec(n))[0]

    # Assert
    assert set(torch.nonzero(back).reshape(-1).tolist()) == largest


@pytest.mark.parametrize("density", [0.05, 1.0])
def test_topk16_kept_values_within_f16_rounding(density: float) -> None:
    """Kept normal-range values come back within f16's relative error 2^-11 of the input."""
    # Prepare
    rng = np.random.default_rng(14)
    mags = np.exp(rng.uniform(math.log(2.0**-14), math.log(65504.0), 20_000))
    x = torch.from_numpy((mags * rng.choice([-1.0, 1.0], mags.size)).astype(np.float32))
    codec = CODECS.build("topk16", density=density)

    # Execute
    back = codec.decode(codec.encode([x]), _vec(x.numel()))[0]

    # Assert
    kept = back != 0
    assert int(kept.sum()) == math.ceil(density * x.numel())
    rel = ((back[kept].double() - x[kept].double()).abs() / x[kept].double().abs()).max()
    assert float(rel) <= 2.0**-11


@pytest.mark.parametrize(("spec", "density"),
                         [(_SPEC, 0.05), (_SPEC, 1.0), (_vec(200_000), 0.05),
                          ((TensorSpec(name="a", shape=(300, 500)), *_SPEC), 0.02)])
def test_topk16_size_is_four_bytes_per_kept_weight(spec: Spec, density: float) -> None:
    """A topk16 blob has sum over tensors of 4 + 4 * nblocks + 4k bytes."""
    # Prepare
    codec = CODECS.build("topk16", density=density)

    # Execute
    size = len(codec.encode(_tensors(spec, seed=15)))

    # Assert
    assert size == _topk16_size(spec, density)


def test_topk16_size_at_five_percent() -> None:
    """At density 0.05 a 100k tensor takes 4 + 2 * 4 + 4 * 5000 bytes, under 1/19.5 of f32."""
    # Prepare
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(16))

    # Execute
    size = len(CODECS.build("topk16").encode([x]))

    # Assert
    assert size == 4 + 2 * 4 + 4 * 5000
    assert size <= 4 * x.numel() / 19.5


def test_topk16_round_trips_a_tensor_of_several_blocks() -> None:
    """A 200k-weight tensor (4 blocks, the last partial) decodes to its f16-rounded top k."""
    # Prepare
    spec = (TensorSpec(name="w", shape=(500, 400)),)
    x = _tensors(spec, seed=17)[0]
    flat = x.reshape(-1)
    kept = torch.topk(flat.abs(), 10_000).indices.sort().values
    codec = CODECS.build("topk16")

    # Execute
    back = codec.decode(codec.encode([x]), spec)[0].reshape(-1)

    # Assert
    assert torch.nonzero(back).reshape(-1).tolist() == kept.tolist()
    assert _bits(back[kept]) == _bits(flat[kept].half().float())
    assert torch.bincount(kept // _BLOCK).tolist() == [
        int((back[b * _BLOCK:(b + 1) * _BLOCK] != 0).sum()) for b in range(4)]
    assert all(int((back[b * _BLOCK:(b + 1) * _BLOCK] != 0).sum()) > 0 for b in range(4))


def test_topk16_decoder_reads_k_from_the_blob() -> None:
    """A blob encoded at density 0.3 decodes the same with a default-built decoder."""
    # Prepare
    tensors = _tensors(seed=18)
    buf = CODECS.build("topk16", density=0.3).encode(tensors)

    # Execute
    back = CODECS.build("topk16").decode(buf, _SPEC)

    # Assert
    assert [_bits(t) for t in back] == [
        _bits(t) for t in CODECS.build("topk16", density=0.3).decode(buf, _SPEC)]
    assert sum(int((t != 0).sum()) for t in back) == sum(
        math.ceil(0.3 * t.numel) for t in _SPEC)


@pytest.mark.parametrize(
    ("n", "k", "blocks", "extra", "reason"),
    [(4, 4, [(5, [0, 1, 2, 3], [1.0] * 4)], 0, Reason.BAD_FRAME),
     (65540, 4, [(0, [], []), (5, [0, 1, 2, 3], [1.0] * 4)], 0, Reason.BAD_FRAME),
     (4, 1, [(0xFFFFFFFF, [0], [1.0])], 0, Reason.BAD_FRAME),
     (4, 2, [(2, [2, 1], [1.0, 2.0])], 0, Reason.BAD_FRAME),
     (4, 2, [(2, [1, 1], [1.0, 2.0])], 0, Reason.BAD_FRAME),
     (65540, 1, [(0, [], []), (1, [4], [1.0])], 0, Reason.BAD_FRAME),
     (65540, 1, [(1, [0], [1.0]), (1, [0], [1.0])], 0, Reason.BAD_FRAME),
     (65540, 2, [(1, [0], [1.0]), (0, [], [])], 4, Reason.BAD_FRAME),
     (4, 0, [(0, [], [])], 0, Reason.BAD_FRAME),
     (4, 5, [(5, [0, 1, 2, 3, 4], [1.0] * 5)], 0, Reason.SIZE_MISMATCH),
     (65540, 2, [(1, [0], [1.0]), (1, [0], [2.0])], -1, Reason.SIZE_MISMATCH),
     (65540, 2, [(1, [0], [1.0]), (1, [0], [2.0])], 2, Reason.SIZE_MISMATCH),
     (65540, 2, [(2, [0, 1], [1.0, 2.0])], 0, Reason.SIZE_MISMATCH),
     (4, 2, [(2, [0, 1], [1.0, float("nan")])], 0, Reason.NON_FINITE),
     (4, 1, [(1, [3], [float("-inf")])], 0, Reason.NON_FINITE)],
    ids=["count_over_block", "count_over_last_block", "huge_count", "descending", "duplicate",
         "offset_past_last_block", "counts_over_k", "counts_under_k", "k0", "k_over_numel",
         "truncated", "trailing_bytes", "block_missing", "nan", "inf"],
)
def test_topk16_decode_rejects_bad_content(n: int, k: int,
                                           blocks: list[tuple[int, list[int], list[float]]],
                                           extra: int, reason: Reason) -> None:
    """Bad counts, unsorted or out-of-block offsets, bad lengths and NaN/Inf are each refused."""
    # Prepare
    buf = _topk16_blob(k, blocks, extra)

    # Execute / Assert
    assert _reason(buf, _vec(n), "topk16") is reason


@pytest.mark.parametrize("cut", [1, 3, 6, 10, "half", "first", "last"])
def test_topk16_truncated_multi_block_blob_is_size_mismatch(cut: int | str) -> None:
    """A multi-block, multi-tensor blob cut anywhere (in k, a count, offsets, values) is refused."""
    # Prepare
    spec = (*_vec(200_000), *_SPEC)
    buf = CODECS.build("topk16").encode(_tensors(spec, seed=19))
    first = _topk16_size(spec[:1], 0.05)
    ends = {"half": len(buf) // 2, "first": first, "last": len(buf) - 1}
    end = ends[cut] if isinstance(cut, str) else cut

    # Execute / Assert
    assert _reason(buf[:end], spec, "topk16") is Reason.SIZE_MISMATCH


@pytest.mark.parametrize(
    ("name", "params"),
    [("int8", {"block_size": 0}), ("int8", {"block_size": 7}), ("int8", {"block_size": 65537}),
     ("int8", {"block_size": 256.0}), ("int8", {"block_size": True}),
     ("topk", {"density": 0}), ("topk", {"density": -0.1}), ("topk", {"density": 1.01}),
     ("topk", {"density": float("nan")}), ("topk", {"density": "0.1"}),
     ("topk", {"density": True}), ("topk16", {"density": 0}), ("topk16", {"density": 1.5}),
     ("topk16", {"density": float("nan")}), ("topk16", {"density": "0.05"}),
     ("topk16", {"density": True})],
)
def test_bad_params_are_config_errors(name: str, params: dict[str, object]) -> None:
    """Out-of-range or mistyped codec params raise bad_config."""
    # Prepare / Execute
    with pytest.raises(ConfigError) as info:
        CODECS.build(name, **params)

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG


# --- error feedback -------------------------------------------------------------------------


def _run_rounds(codec_name: str, delta: list[torch.Tensor], rounds: int,
                **params: object) -> tuple[ErrorFeedback, list[torch.Tensor], list[float]]:
    """Compress the same delta `rounds` times with feedback; return the sum and residual norms."""
    codec = CODECS.build(codec_name, **params)
    feedback, spec = ErrorFeedback(), shapes_spec(delta)
    total = [torch.zeros_like(t) for t in delta]
    norms = []
    for _ in range(rounds):
        for acc, part in zip(total, codec.decode(feedback.compress(delta, codec), spec),
                             strict=True):
            acc.add_(part)
        residual = feedback.residual or [torch.zeros(1)]
        norms.append(float(torch.cat([r.reshape(-1) for r in residual]).norm()))
    return feedback, total, norms


@pytest.mark.parametrize("name", NAMES)
def test_feedback_sum_plus_residual_is_every_delta(name: str) -> None:
    """For any codec, the decoded updates of 50 rounds plus the residual equal 50 x delta."""
    # Prepare
    delta = _tensors(seed=9)

    # Execute
    feedback, total, _ = _run_rounds(name, delta, 50)

    # Assert
    residual = feedback.residual or [torch.zeros_like(t) for t in delta]
    for t, acc, r in zip(delta, total, residual, strict=True):
        torch.testing.assert_close(acc + r, 50 * t, rtol=0, atol=1e-4 * 50 * float(t.abs().max()))


def test_feedback_recovers_the_sum_that_topk_alone_loses() -> None:
    """With topk at 1% the fed-back sum converges to rounds x delta; plain topk misses ~95%."""
    # Prepare
    rounds = 2000  # 1% per round needs well over 100 rounds to send each weight once
    delta = [torch.randn(1000, generator=torch.Generator().manual_seed(10))]
    codec = CODECS.build("topk")
    plain = codec.decode(codec.encode(delta), shapes_spec(delta))[0]

    # Execute
    _, total, _ = _run_rounds("topk", delta, rounds)

    # Assert
    target = rounds * delta[0]
    assert float((total[0] - target).norm() / target.norm()) < 0.05
    assert float((rounds * plain - target).norm() / target.norm()) > 0.9


def test_feedback_recovers_the_sum_that_topk16_alone_loses() -> None:
    """With topk16 at 5% the fed-back sum converges to rounds x delta despite f16 rounding."""
    # Prepare
    rounds = 2000
    delta = [torch.randn(1000, generator=torch.Generator().manual_seed(20))]
    codec = CODECS.build("topk16")
    plain = codec.decode(codec.encode(delta), shapes_spec(delta))[0]

    # Execute
    _, total, norms = _run_rounds("topk16", delta, rounds)

    # Assert
    target = rounds * delta[0]
    assert float((total[0] - target).norm() / target.norm()) < 0.02
    assert float((rounds * plain - target).norm() / target.norm()) > 0.8
    assert max(norms[rounds // 2:]) <= 1.1 * max(norms[: rounds // 2])


def test_feedback_residual_stays_bounded() -> None:
    """The topk residual settles: never above the contraction bound, and not growing late on."""
    # Prepare
    delta = [torch.randn(1000, generator=torch.Generator().manual_seed(11))]
    q = math.sqrt(1 - 10 / 1000)  # topk keeps 10 of 1000, so ||x - topk(x)|| <= q ||x||
    bound = q / (1 - q) * float(delta[0].norm())

    # Execute
    _, _, norms = _run_rounds("topk", delta, 1000)

    # Assert
    assert max(norms) <= bound
    assert max(norms[500:]) <= 1.1 * max(norms[:500])


@pytest.mark.parametrize("name", LOSSLESS)
def test_feedback_with_lossless_codec_keeps_no_residual(name: str) -> None:
    """A lossless codec sends everything, so the residual stays zero (None)."""
    # Prepare
    feedback = ErrorFeedback()
    codec = CODECS.build(name)

    # Execute
    blobs = [feedback.compress(_tensors(seed=s), codec) for s in range(3)]

    # Assert
    assert feedback.residual is None
    assert blobs[2] == codec.encode(_tensors(seed=2))


def test_feedback_never_modifies_inputs_and_resets() -> None:
    """compress leaves the caller's tensors alone, and reset drops the residual."""
    # Prepare
    delta = _tensors(seed=12)
    before = [_bits(t) for t in delta]
    feedback = ErrorFeedback()
    codec = CODECS.build("int8")

    # Execute
    feedback.compress(delta, codec)
    feedback.compress(delta, codec)
    had_residual = feedback.residual is not None
    feedback.reset()

    # Assert
    assert [_bits(t) for t in delta] == before
    assert had_residual
    assert feedback.residual is None


def test_feedback_refuses_changed_shapes_and_keeps_residual() -> None:
    """A delta of other shapes than the residual is a ValueError and the residual survives."""
    # Prepare
    feedback = ErrorFeedback()
    codec = CODECS.build("topk")
    feedback.compress(_tensors(), codec)
    kept = feedback.residual

    # Execute / Assert
    with pytest.raises(ValueError, match="shapes"):
        feedback.compress([torch.randn(4)], codec)
    assert feedback.residual is kept
