"""The "topk" codec: per tensor, only the k largest-magnitude entries travel.

k = max(1, ceil(density * numel)) per tensor (at most numel). Layout (little-endian), for
each tensor in spec order: u32 k | u32 indices[k] | f32 values[k]; 4 + 8k bytes per tensor.
Indices are flat (row-major) and strictly ascending. Decoding scatters the values into
zeros. The output size comes from the spec, not the blob, so callers bound the spec (the
cloud checks it against the model's before decoding). Pair it with `ErrorFeedback` so the
entries left out are sent in later rounds instead of being lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedstream.shared.protocol.codecs.base import (
    CODECS,
    F32_MAX,
    U32,
    Entries,
    check_density,
    decode_sparse,
    keep_largest,
)
from fedstream.shared.protocol.messages import Spec, TensorSpec


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
        check_density(self.density, "topk")


class TopkCodec:
    """Magnitude top-k sparsification."""

    name = "topk"
    lossless = False

    def __init__(self, params: TopkParams) -> None:
        self.params = params

    def encode(self, tensors: Sequence[torch.Tensor]) -> bytes:
        """Keep each tensor's k largest |x|; raises ValueError for NaN/Inf or no tensors."""
        parts: list[bytes] = []
        for kept in keep_largest(tensors, self.params.density, limit=F32_MAX, codec=self.name):
            parts += [U32.pack(kept.indices.numel()), kept.indices.numpy().astype("<u4").tobytes(),
                      kept.values.numpy().astype("<f4", copy=False).tobytes()]
        return b"".join(parts)

    def decode(self, buf: bytes, spec: Spec) -> list[torch.Tensor]:
        """Check every tensor's k, indices and values first, then scatter into zeros."""
        return decode_sparse(buf, spec, codec=self.name, section_size=_section_size,
                             read_entries=_read_entries)


def _section_size(_t: TensorSpec, k: int) -> int:
    return 4 + 8 * k


def _read_entries(buf: bytes, start: int, k: int, _t: TensorSpec) -> Entries:
    idx = np.frombuffer(buf, dtype="<u4", count=k, offset=start).astype(np.int64)
    values = np.frombuffer(buf, dtype="<f4", count=k, offset=start + 4 * k).astype(np.float32)
    return idx, values


@CODECS.add("topk", "per-tensor magnitude top-k, lossy (8 bytes per kept weight + 4 per tensor)")
def build_topk(*, density: float = 0.01) -> TopkCodec:
    """Build the topk codec (see `TopkParams`)."""
    return TopkCodec(TopkParams(density=density))
