"""The "topk" codec: per tensor, only the k largest-magnitude entries travel.

k = max(1, ceil(density * numel)) per tensor (at most numel). Layout (little-endian), for
each tensor in spec order: u32 k | u32 indices[k] | f32 values[k]; 4 + 8k bytes per tensor.
Indices are flat (row-major) and strictly ascending. Decoding scatters the values into
zeros. The output size comes from the spec, not the blob, so callers bound the spec (the
cloud checks it against the model's before decoding). Pair it with `ErrorFeedback` so the
entries left out are sent in later rounds instead of being lost.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from fedstream.shared.codecs.base import CODECS, F32_MAX, check_encodable, split_checked
from fedstream.shared.errors import ConfigError, ProtocolError, Reason
from fedstream.shared.messages import Spec

_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True, kw_only=True)
class TopkParams:
    """How much of each tensor to keep.

    Args:
        density: Share of each tensor's entries kept, in (0, 1].

    Raises:
        ConfigError: BAD_CONFIG for a density that is not a number in (0, 1].
    """

    density: float = 0.01

    def __post_init__(self) -> None:
        d = self.density
        if type(d) not in (int, float) or not 0 < d <= 1:  # NaN fails the range test too
            raise ConfigError(Reason.BAD_CONFIG, f"topk: density must be in (0, 1]; got {d!r}")


class TopkCodec:
    """Magnitude top-k sparsification."""

    name = "topk"
    lossless = False

    def __init__(self, params: TopkParams) -> None:
        self.params = params

    def encode(self, tensors: Sequence[torch.Tensor]) -> bytes:
        """Keep each tensor's k largest |x|; raises ValueError for NaN/Inf or no tensors."""
        if not tensors:
            raise ValueError("topk: nothing to encode")
        parts: list[bytes] = []
        for tensor in tensors:
            flat = tensor.detach().reshape(-1).to("cpu", torch.float32)
            check_encodable(flat, limit=F32_MAX, codec=self.name)
            n = flat.numel()
            if not 0 < n < 1 << 32:
                raise ValueError(f"topk: a tensor of {n} elements cannot be indexed by u32")
            k = min(n, max(1, math.ceil(self.params.density * n)))
            idx = torch.topk(flat.abs(), k, sorted=False).indices.sort().values
            parts += [_U32.pack(k), idx.numpy().astype("<u4").tobytes(),
                      flat[idx].numpy().astype("<f4", copy=False).tobytes()]
        return b"".join(parts)

    def decode(self, buf: bytes, spec: Spec) -> list[torch.Tensor]:
        """Check every tensor's k, indices and values first, then scatter into zeros."""
        parsed: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] = []
        offset = 0
        for t in spec:
            if len(buf) - offset < 4:
                raise ProtocolError(Reason.SIZE_MISMATCH, f"topk blob ends before {t.name}'s k")
            (k,) = _U32.unpack_from(buf, offset)
            if k == 0:
                raise ProtocolError(Reason.BAD_FRAME, f"topk k=0 for {t.name}; k is at least 1")
            if k > t.numel or offset + 4 + 8 * k > len(buf):
                raise ProtocolError(Reason.SIZE_MISMATCH,
                                    f"topk k={k} for {t.name} ({t.numel} entries) does not fit")
            idx = np.frombuffer(buf, dtype="<u4", count=k, offset=offset + 4).astype(np.int64)
            values = np.frombuffer(buf, dtype="<f4", count=k, offset=offset + 4 + 4 * k)
            if (np.diff(idx) <= 0).any() or idx[-1] >= t.numel:
                raise ProtocolError(Reason.BAD_FRAME,
                                    f"topk indices of {t.name} repeat, go down or leave the tensor")
            parsed.append((idx, values.astype(np.float32)))
            offset += 4 + 8 * k
        if offset != len(buf):
            raise ProtocolError(Reason.SIZE_MISMATCH, f"topk blob has {len(buf) - offset} "
                                                      "bytes past its last tensor")
        flat = torch.zeros(sum(t.numel for t in spec))
        start = 0
        for t, (idx, values) in zip(spec, parsed, strict=True):
            flat[start + torch.from_numpy(idx)] = torch.from_numpy(values)
            start += t.numel
        return split_checked(flat, spec)


@CODECS.add("topk", "per-tensor magnitude top-k, lossy (8 bytes per kept weight + 4 per tensor)")
def build_topk(*, density: float = 0.01) -> TopkCodec:
    """Build the topk codec (see `TopkParams`)."""
    return TopkCodec(TopkParams(density=density))
