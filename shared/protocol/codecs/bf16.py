"""The "bf16" codec: bfloat16 (the top 16 bits of a float32), 2 bytes per weight.

Layout (little-endian, no header): u16 values[n], the bfloat16 bit patterns of every tensor
flattened row-major in spec order, n = total elements of the spec. Encoding is torch's
`.to(torch.bfloat16)` (round to nearest even), so a normal value comes back with relative
error <= 2^-8. It keeps float32's exponent range and refuses only |x| above bfloat16's
largest finite value (about 3.39e38).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fedstream.shared.protocol.codecs.base import CODECS, flatten, require_size, split_checked
from fedstream.shared.protocol.messages import Spec

BF16_MAX = float(torch.finfo(torch.bfloat16).max)


class BF16Codec:
    """bfloat16; halves the f32 size and keeps its range."""

    name = "bf16"
    lossless = False

    def encode(self, tensors: Sequence[torch.Tensor]) -> bytes:
        """Round to bfloat16; raises ValueError for NaN/Inf or |x| > the bfloat16 maximum."""
        flat = flatten(tensors, limit=BF16_MAX, codec=self.name)
        bits = flat.to(torch.bfloat16).view(torch.int16)
        return bits.numpy().astype("<i2", copy=False).tobytes()

    def decode(self, buf: bytes, spec: Spec) -> list[torch.Tensor]:
        """Reinterpret the 16-bit patterns as bfloat16, widen to float32 (exact), cut by `spec`."""
        require_size(len(buf), 2 * sum(t.numel for t in spec), "bf16 blob")
        bits = torch.from_numpy(np.frombuffer(buf, dtype="<i2").astype(np.int16))
        return split_checked(bits.view(torch.bfloat16).to(torch.float32), spec)


@CODECS.add("bf16", "bfloat16, lossy (2 bytes per weight, float32's range)")
def build_bf16() -> BF16Codec:
    """Build the bf16 codec (it has no parameters)."""
    return BF16Codec()
