"""Lossless float32 codec: the tensors' bytes, concatenated (little-endian)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fedstream.shared.codecs.base import CODECS
from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.messages import Spec


class F32Codec:
    """float32, bit-exact."""

    name = "f32"

    def encode(self, tensors: Sequence[torch.Tensor]) -> bytes:
        """Concatenate the tensors' float32 bytes."""
        flat = torch.cat([t.detach().reshape(-1).to(torch.float32) for t in tensors])
        return flat.numpy().astype("<f4", copy=False).tobytes()

    def decode(self, buf: bytes, spec: Spec) -> list[torch.Tensor]:
        """View `buf` as float32 and cut it by `spec`, one copy in total."""
        total = sum(t.numel for t in spec)
        if len(buf) != 4 * total:
            raise ProtocolError(Reason.SIZE_MISMATCH,
                                f"f32 blob has {len(buf)} bytes, spec needs {4 * total}")
        flat = torch.from_numpy(np.frombuffer(buf, dtype="<f4").copy())
        if not bool(torch.isfinite(flat).all()):
            raise ProtocolError(Reason.NON_FINITE, "decoded tensors hold NaN or Inf")
        return [part.view(t.shape) for part, t in
                zip(torch.split(flat, [t.numel for t in spec]), spec, strict=True)]


@CODECS.add("f32", "float32, lossless (4 bytes per weight)")
def build_f32() -> F32Codec:
    """Build the f32 codec (it has no parameters)."""
    return F32Codec()
