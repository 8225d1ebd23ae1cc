"""Error feedback: what a lossy codec drops this round is added to the next round's update.

EF (Seide et al. 2014; Karimireddy et al. 2019) keeps the residual e and sends C(d + e),
then sets e = (d + e) - decode(C(d + e)). Summed over rounds, the decoded updates equal the
summed deltas minus the current residual, so nothing is lost, only delayed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fedstream.shared.protocol.codecs.base import Codec
from fedstream.shared.protocol.messages import Spec, TensorSpec


def shapes_spec(tensors: Sequence[torch.Tensor]) -> Spec:
    """A spec naming the tensors "t0", "t1", ... with their shapes.

    Codecs read only shapes from a spec, so the names never reach the wire.
    """
    return tuple(TensorSpec(name=f"t{i}", shape=tuple(t.shape)) for i, t in enumerate(tensors))


class ErrorFeedback:
    """One sender's residual for one stream of updates (e.g. one edge's deltas of one model).

    The residual starts as None (zero). Use one instance per stream; swapping the codec
    between calls is allowed, changing the tensor shapes is not.
    """

    def __init__(self) -> None:
        self.residual: list[torch.Tensor] | None = None

    def compress(self, delta: Sequence[torch.Tensor], codec: Codec) -> bytes:
        """Encode `delta` plus the carried residual and keep what the codec lost.

        The spec for the decode is built from the tensors' shapes (`shapes_spec`); `delta` is
        never modified.

        Args:
            delta: float32 tensors in spec order.
            codec: Any codec; a lossless one leaves the residual at zero.

        Returns:
            The blob, exactly what `codec.encode` returned for the corrected tensors.

        Raises:
            ValueError: the shapes differ from the previous call's, or the codec refuses the
                corrected values (NaN/Inf, out of range). The residual is unchanged then.
        """
        current = [t.detach().to("cpu", torch.float32) for t in delta]
        if self.residual is None:
            corrected = current
        else:
            if [r.shape for r in self.residual] != [t.shape for t in current]:
                raise ValueError("error feedback: delta shapes changed since the last call")
            corrected = [t + r for t, r in zip(current, self.residual, strict=True)]
        blob = codec.encode(corrected)
        if codec.lossless:
            self.residual = None
        else:
            decoded = codec.decode(blob, shapes_spec(corrected))
            self.residual = [c - d for c, d in zip(corrected, decoded, strict=True)]
        return blob

    def norm(self) -> float:
        """L2 norm of what the codec still owes the receiver (0 with none), to 6 places."""
        residual = self.residual or []
        return round(math.sqrt(sum(float(r.norm()) ** 2 for r in residual)), 6)

    def reset(self) -> None:
        """Forget the residual, e.g. when the sender's base model is replaced."""
        self.residual = None
