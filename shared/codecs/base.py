"""The codec contract (tensors in spec order <-> one byte blob) and checks every codec shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.messages import Spec
from fedstream.shared.registry import Registry

F32_MAX = float(np.finfo(np.float32).max)


class Codec(Protocol):
    """Encodes a list of float32 tensors to bytes and back.

    `lossless` is True when `decode(encode(x))` is bit-exact; error feedback skips the
    residual for such codecs.
    """

    name: str
    lossless: bool

    def encode(self, tensors: Sequence[torch.Tensor]) -> bytes:
        """Bytes of `tensors` in order; raises ValueError for NaN/Inf or out-of-range input."""
        ...

    def decode(self, buf: bytes, spec: Spec) -> list[torch.Tensor]:
        """float32 tensors shaped by `spec`.

        Raises:
            ProtocolError: SIZE_MISMATCH when a length does not fit the spec or the buffer,
                BAD_FRAME for inconsistent content, NON_FINITE for NaN/Inf values.
        """
        ...


CODECS: Registry[Codec] = Registry("codec")


def flatten(tensors: Sequence[torch.Tensor], *, limit: float, codec: str) -> torch.Tensor:
    """The tensors as one float32 CPU vector, refusing what the target format cannot hold.

    Raises:
        ValueError: no tensors, a NaN/Inf, or a magnitude above `limit`.
    """
    if not tensors:
        raise ValueError(f"{codec}: nothing to encode")
    flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float32) for t in tensors])
    check_encodable(flat, limit=limit, codec=codec)
    return flat


def check_encodable(flat: torch.Tensor, *, limit: float, codec: str) -> None:
    """Raise ValueError if `flat` holds NaN/Inf or a magnitude above `limit`."""
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"{codec}: input holds NaN or Inf")
    if flat.numel() and float(flat.abs().max()) > limit:
        raise ValueError(f"{codec}: |value| {float(flat.abs().max())} exceeds {limit}")


def require_size(got: int, want: int, what: str) -> None:
    """Raise SIZE_MISMATCH unless a blob (or part of it) has exactly `want` bytes."""
    if got != want:
        raise ProtocolError(Reason.SIZE_MISMATCH, f"{what} has {got} bytes, spec needs {want}")


def split_checked(flat: torch.Tensor, spec: Spec) -> list[torch.Tensor]:
    """Refuse NaN/Inf (NON_FINITE), then cut a decoded float32 vector into `spec`'s shapes."""
    if not bool(torch.isfinite(flat).all()):
        raise ProtocolError(Reason.NON_FINITE, "decoded tensors hold NaN or Inf")
    return [part.view(t.shape) for part, t in
            zip(torch.split(flat, [t.numel for t in spec]), spec, strict=True)]
