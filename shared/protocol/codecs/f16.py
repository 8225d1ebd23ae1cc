"""The "f16" codec: IEEE 754 half precision, 2 bytes per weight.

Layout (little-endian, no header): f16 values[n], every tensor flattened row-major in spec
order, n = total elements of the spec. Encoding rounds to nearest even, so a value in the
normal half range (6.1e-5 <= |x| <= 65504) comes back with relative error <= 2^-11; smaller
values lose precision as half subnormals or flush to zero. |x| > 65504 is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fedstream.shared.protocol.codecs.base import CODECS, flatten, require_size, split_checked
from fedstream.shared.protocol.messages import Spec

F16_MAX = float(np.finfo(np.float16).max)  # 65504


class F16Codec:
    """Half precision; halves the f32 size."""

    name = "f16"
    lossless = False

    def encode(self, tensors: Sequence[torch.Tensor]) -> bytes:
        """Round to half; raises ValueError for NaN/Inf or |x| > 65504."""
        flat = flatten(tensors, limit=F16_MAX, codec=self.name)
        return flat.to(torch.float16).numpy().astype("<f2", copy=False).tobytes()

    def decode(self, buf: bytes, spec: Spec) -> list[torch.Tensor]:
        """Widen the half values to float32 (exact) and cut them by `spec`."""
        require_size(len(buf), 2 * sum(t.numel for t in spec), "f16 blob")
        halves = torch.from_numpy(np.frombuffer(buf, dtype="<f2").astype(np.float16))
        return split_checked(halves.to(torch.float32), spec)


@CODECS.add("f16", "IEEE half precision, lossy (2 bytes per weight, |x| <= 65504)")
def build_f16() -> F16Codec:
    """Build the f16 codec (it has no parameters)."""
    return F16Codec()
