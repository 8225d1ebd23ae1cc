"""The "int8" codec: blockwise absmax int8 quantisation, about 1 byte per weight.

The tensors are concatenated (row-major, spec order) into one vector of n elements and cut
into nblocks = ceil(n / block_size) blocks; the last block may be short. Each block stores a
scale = absmax / 127 (0 for an all-zero block) and q = round(x / scale) in [-127, 127].

Layout (little-endian): u32 block_size | f32 scales[nblocks] | i8 q[n]; 4 + 4 * nblocks + n
bytes. The block size travels in the blob, so any decoder reads any block size in
[8, 65536]. Each element comes back within scale / 2 of its block (up to float32 rounding
when absmax is below float32's normal range).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedstream.shared.errors import ConfigError, ProtocolError, Reason
from fedstream.shared.protocol.codecs.base import (
    CODECS,
    F32_MAX,
    flatten,
    require_size,
    split_checked,
)
from fedstream.shared.protocol.messages import Spec

MIN_BLOCK, MAX_BLOCK = 8, 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class Int8Params:
    """How finely to scale.

    Args:
        block_size: Elements sharing one float32 scale, in [8, 65536]; smaller blocks track
            local magnitudes better and cost 4 / block_size bytes per weight.

    Raises:
        ConfigError: BAD_CONFIG for a block size that is not an int in range.
    """

    block_size: int = 256

    def __post_init__(self) -> None:
        bs = self.block_size
        if type(bs) is not int or not MIN_BLOCK <= bs <= MAX_BLOCK:
            raise ConfigError(Reason.BAD_CONFIG,
                              f"int8: block_size must be an int in [{MIN_BLOCK}, {MAX_BLOCK}]; "
                              f"got {bs!r}")


class Int8Codec:
    """Blockwise absmax int8."""

    name = "int8"
    lossless = False

    def __init__(self, params: Int8Params) -> None:
        self.params = params

    def encode(self, tensors: Sequence[torch.Tensor]) -> bytes:
        """Quantise block by block; raises ValueError for NaN/Inf or scales that overflow."""
        flat = flatten(tensors, limit=F32_MAX, codec=self.name)
        n, bs = flat.numel(), self.params.block_size
        blocks = torch.nn.functional.pad(flat, (0, -n % bs)).view(-1, bs)
        scales = blocks.abs().amax(dim=1) / 127
        if not bool(torch.isfinite(scales * 127).all()):
            raise ValueError("int8: a block's absmax is too close to the float32 maximum")
        # An all-zero block (or one whose scale underflows) divides by 1 and quantises to 0.
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        q = torch.round(blocks / safe[:, None]).clamp_(-127, 127).to(torch.int8).reshape(-1)[:n]
        return b"".join((struct.pack("<I", bs), scales.numpy().astype("<f4", copy=False).tobytes(),
                         q.numpy().tobytes()))

    def decode(self, buf: bytes, spec: Spec) -> list[torch.Tensor]:
        """Check the header and lengths, then multiply each block by its scale."""
        n = sum(t.numel for t in spec)
        if len(buf) < 4:
            raise ProtocolError(Reason.SIZE_MISMATCH, f"int8 blob has only {len(buf)} bytes")
        (bs,) = struct.unpack_from("<I", buf)
        if not MIN_BLOCK <= bs <= MAX_BLOCK:
            raise ProtocolError(Reason.BAD_FRAME, f"int8 block size {bs} is out of range")
        nblocks = -(-n // bs)
        require_size(len(buf), 4 + 4 * nblocks + n, f"int8 blob (block size {bs})")
        scales = np.frombuffer(buf, dtype="<f4", count=nblocks, offset=4).astype(np.float32)
        if not np.isfinite(scales).all():
            raise ProtocolError(Reason.NON_FINITE, "int8 scales hold NaN or Inf")
        if (scales < 0).any():
            raise ProtocolError(Reason.BAD_FRAME, "int8 scale is negative")
        q = np.frombuffer(buf, dtype=np.int8, count=n, offset=4 + 4 * nblocks)
        if (q == -128).any():
            raise ProtocolError(Reason.BAD_FRAME, "int8 value -128 is outside [-127, 127]")
        values = np.zeros(nblocks * bs, dtype=np.float32)
        values[:n] = q
        with np.errstate(over="ignore"):  # an overflow to inf is reported as NON_FINITE below
            values.reshape(nblocks, bs)[:] *= scales[:, None]
        return split_checked(torch.from_numpy(values[:n]), spec)


@CODECS.add("int8", "blockwise absmax int8, lossy (~1 byte per weight + 4 per block)")
def build_int8(*, block_size: int = 256) -> Int8Codec:
    """Build the int8 codec (see `Int8Params`)."""
    return Int8Codec(Int8Params(block_size=block_size))
