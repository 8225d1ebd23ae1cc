"""The "topk16" codec: per tensor, the k largest-magnitude entries at 4 bytes each.

k = max(1, ceil(density * numel)) per tensor (at most numel). Each flattened (row-major)
tensor is cut into blocks of 65536 elements (the last may be shorter), so a kept entry's
position fits a u16 offset within its block. Layout (little-endian), for each tensor in
spec order:

    u32 k
    for each block b = 0 .. ceil(numel / 65536) - 1, in order:
        u32 count_b | u16 offsets[count_b] | f16 values[count_b]

Offsets are strictly ascending within their block and smaller than the block's length; the
counts sum to k. A tensor takes 4 + 4 * nblocks + 4k bytes, so 20x under f32 at density
~5% where "topk" (8 bytes per entry) needs 2.5%. Decoding scatters the values into zeros;
its output size comes from the spec, not the blob, so callers bound the spec.

Values are rounded to IEEE half (nearest even): in the normal half range
(6.1e-5 <= |x| <= 65504) a kept value comes back within relative error 2^-11, smaller
ones lose precision as half subnormals or flush to zero, and |x| > 65504 is refused with
ValueError, as in "f16". Pair it with `ErrorFeedback` (feedback.py): its residual is
what was sent minus what decodes, so it carries both the entries left out and the f16
rounding error of the kept ones into the next update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.protocol.codecs.base import (
    CODECS,
    U32,
    Entries,
    check_density,
    decode_sparse,
    keep_largest,
)
from fedstream.shared.protocol.codecs.f16 import F16_MAX
from fedstream.shared.protocol.messages import Spec, TensorSpec

BLOCK = 1 << 16  # elements per block: offsets within a block fit a u16


@dataclass(frozen=True, slots=True, kw_only=True)
class Topk16Params:
    """How much of each tensor to keep.

    Args:
        density: Share of each tensor's entries kept, in (0, 1].

    Raises:
        ConfigError: BAD_CONFIG for a density that is not a number in (0, 1].
    """

    density: float = 0.05

    def __post_init__(self) -> None:
        check_density(self.density, "topk16")


class Topk16Codec:
    """Magnitude top-k sparsification with block-relative u16 offsets and f16 values."""

    name = "topk16"
    lossless = False

    def __init__(self, params: Topk16Params) -> None:
        self.params = params

    def encode(self, tensors: Sequence[torch.Tensor]) -> bytes:
        """Keep each tensor's k largest |x| as f16.

        Raises:
            ValueError: no tensors, NaN/Inf, or |x| > 65504.
        """
        parts: list[bytes] = []
        for kept in keep_largest(tensors, self.params.density, limit=F16_MAX, codec=self.name):
            offsets = (kept.indices % BLOCK).numpy().astype("<u2")
            values = kept.values.to(torch.float16).numpy().astype("<f2", copy=False)
            # Indices ascend, so each block's entries are one contiguous slice.
            counts = torch.bincount(kept.indices // BLOCK, minlength=_blocks(kept.numel))
            parts.append(U32.pack(kept.indices.numel()))
            start = 0
            for count in counts.tolist():
                end = start + count
                parts += [U32.pack(count), offsets[start:end].tobytes(),
                          values[start:end].tobytes()]
                start = end
        return b"".join(parts)

    def decode(self, buf: bytes, spec: Spec) -> list[torch.Tensor]:
        """Check every tensor's k, block counts, offsets and values, then scatter into zeros.

        Raises:
            ProtocolError: SIZE_MISMATCH when the blob's length does not fit the spec and
                the k values; BAD_FRAME for k = 0, a count above its block's length, counts
                that do not sum to k, or offsets that repeat, go down or leave their block;
                NON_FINITE for a NaN/Inf value.
        """
        return decode_sparse(buf, spec, codec=self.name, section_size=_section_size,
                             read_entries=_read_entries)


def _blocks(numel: int) -> int:
    return -(-numel // BLOCK)


def _section_size(t: TensorSpec, k: int) -> int:
    return 4 + 4 * _blocks(t.numel) + 4 * k


def _read_entries(buf: bytes, start: int, k: int, t: TensorSpec) -> Entries:
    """The flat indices and values of one tensor's blocks; `decode_sparse` has checked that
    the section (sized for k) fits the buffer, and every read below stays inside it as long
    as the counts read so far add up to at most k.
    """
    indices: list[npt.NDArray[np.int64]] = []
    values: list[npt.NDArray[np.float16]] = []
    pos, seen = start, 0
    for b in range(_blocks(t.numel)):
        (count,) = U32.unpack_from(buf, pos)
        length = min(BLOCK, t.numel - b * BLOCK)
        if count > length:
            raise ProtocolError(Reason.BAD_FRAME, f"topk16 block {b} of {t.name} declares "
                                                  f"{count} entries; it has {length}")
        if seen + count > k:
            raise ProtocolError(Reason.BAD_FRAME,
                                f"topk16 block counts of {t.name} exceed k={k}")
        if count:
            offsets = np.frombuffer(buf, dtype="<u2", count=count, offset=pos + 4)
            indices.append(offsets.astype(np.int64) + b * BLOCK)
            values.append(np.frombuffer(buf, dtype="<f2", count=count, offset=pos + 4 + 2 * count))
        pos += 4 + 4 * count
        seen += count
    if seen != k:
        raise ProtocolError(Reason.BAD_FRAME,
                            f"topk16 block counts of {t.name} sum to {seen}, not k={k}")
    # Offsets stay below 65536, so ascending flat indices (checked by decode_sparse) mean
    # ascending offsets within each block, and the last index bounds the last block.
    return np.concatenate(indices), np.concatenate(values).astype(np.float32)


@CODECS.add("topk16", "per-tensor magnitude top-k with u16 block offsets and f16 values, lossy "
                      "(4 bytes per kept weight + 4 per 65536-element block + 4 per tensor)")
def build_topk16(*, density: float = 0.05) -> Topk16Codec:
    """Build the topk16 codec (see `Topk16Params`)."""
    return Topk16Codec(Topk16Params(density=density))
