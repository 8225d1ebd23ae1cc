"""The codec contract (tensors in spec order <-> one byte blob) and checks every codec shares."""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import torch

from fedstream.shared.errors import ConfigError, ProtocolError, Reason
from fedstream.shared.protocol.messages import Spec, TensorSpec
from fedstream.shared.registry import Registry

F32_MAX = float(np.finfo(np.float32).max)
U32 = struct.Struct("<I")


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


# --- sparse codecs: per tensor, a u32 k and then the k largest-magnitude entries --------------


def check_density(density: float, codec: str) -> None:
    """Raise BAD_CONFIG unless `density` is an int or float (not a bool) in (0, 1]."""
    if type(density) not in (int, float) or not 0 < density <= 1:  # NaN fails the range too
        raise ConfigError(Reason.BAD_CONFIG, f"{codec}: density must be in (0, 1]; got {density!r}")


class Kept(NamedTuple):
    """The entries a sparse codec sends for one tensor."""

    numel: int
    indices: torch.Tensor  # int64, flat (row-major), strictly ascending
    values: torch.Tensor  # float32, indices' entries


def keep_largest(tensors: Sequence[torch.Tensor], density: float, *, limit: float,
                 codec: str) -> list[Kept]:
    """Per tensor, its k = max(1, ceil(density * numel)) largest |x| (at most numel).

    Raises:
        ValueError: no tensors, a NaN/Inf, a magnitude above `limit`, or a tensor whose
            element count is not in 1 .. 2^32 - 1 (k and indices travel as u32).
    """
    if not tensors:
        raise ValueError(f"{codec}: nothing to encode")
    kept: list[Kept] = []
    for tensor in tensors:
        flat = tensor.detach().reshape(-1).to("cpu", torch.float32)
        check_encodable(flat, limit=limit, codec=codec)
        n = flat.numel()
        if not 0 < n < 1 << 32:
            raise ValueError(f"{codec}: a tensor of {n} elements cannot be indexed by u32")
        k = min(n, max(1, math.ceil(density * n)))
        idx = torch.topk(flat.abs(), k, sorted=False).indices.sort().values
        kept.append(Kept(n, idx, flat[idx]))
    return kept


Entries = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]


def decode_sparse(buf: bytes, spec: Spec, *, codec: str,
                  section_size: Callable[[TensorSpec, int], int],
                  read_entries: Callable[[bytes, int, int, TensorSpec], Entries],
                  ) -> list[torch.Tensor]:
    """Check every tensor's section of a sparse blob, then scatter the values into zeros.

    Each tensor's section starts with u32 k (1 <= k <= numel) and takes
    `section_size(t, k)` bytes in all; that is checked against the buffer before
    `read_entries(buf, start, k, t)` parses the entries after k (it raises BAD_FRAME for
    inconsistent content and must read only inside the section). It returns fresh (writable)
    arrays; the flat indices must be strictly ascending and inside the tensor.

    Raises:
        ProtocolError: SIZE_MISMATCH for a blob that ends early or runs on, or k > numel;
            BAD_FRAME for k = 0 or bad indices (and whatever `read_entries` refuses);
            NON_FINITE for NaN/Inf values.
    """
    parsed: list[Entries] = []
    offset = 0
    for t in spec:
        if len(buf) - offset < 4:
            raise ProtocolError(Reason.SIZE_MISMATCH, f"{codec} blob ends before {t.name}'s k")
        (k,) = U32.unpack_from(buf, offset)
        if k == 0:
            raise ProtocolError(Reason.BAD_FRAME, f"{codec} k=0 for {t.name}; k is at least 1")
        end = offset + section_size(t, k)
        if k > t.numel or end > len(buf):
            raise ProtocolError(Reason.SIZE_MISMATCH,
                                f"{codec} k={k} for {t.name} ({t.numel} entries) does not fit")
        idx, values = read_entries(buf, offset + 4, k, t)
        if (np.diff(idx) <= 0).any() or idx[-1] >= t.numel:
            raise ProtocolError(Reason.BAD_FRAME,
                                f"{codec} indices of {t.name} repeat, go down or leave the tensor")
        parsed.append((idx, values))
        offset = end
    if offset != len(buf):
        raise ProtocolError(Reason.SIZE_MISMATCH, f"{codec} blob has {len(buf) - offset} "
                                                  "bytes past its last tensor")
    flat = torch.zeros(sum(t.numel for t in spec))
    start = 0
    for t, (idx, values) in zip(spec, parsed, strict=True):
        flat[start + torch.from_numpy(idx)] = torch.from_numpy(values)
        start += t.numel
    return split_checked(flat, spec)
