"""The codec contract: tensors in spec order <-> one byte blob."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from fedstream.shared.messages import Spec
from fedstream.shared.registry import Registry


class Codec(Protocol):
    """Encodes a list of float32 tensors to bytes and back."""

    name: str

    def encode(self, tensors: Sequence[torch.Tensor]) -> bytes:
        """Bytes of `tensors` in order."""
        ...

    def decode(self, buf: bytes, spec: Spec) -> list[torch.Tensor]:
        """Tensors shaped by `spec`; raises ProtocolError on a size mismatch or NaN/Inf."""
        ...


CODECS: Registry[Codec] = Registry("codec")
