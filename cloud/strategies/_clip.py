"""Norm clipping of updates, written once for every strategy's `clip_norm`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedstream.cloud.strategies.base import Aggregator, flat_norm


def clip_to_norm(delta: Sequence[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """`delta * min(1, max_norm / ||delta||)`, ||.|| being the global L2 norm over all tensors.

    Pure: a delta already within `max_norm` comes back as a new list of the same (unchanged)
    tensors; a longer one as new tensors of the same dtype, scaled in float64.

    Raises:
        ValueError: `max_norm` is not positive.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    norm = flat_norm(delta)
    if norm <= max_norm:
        return list(delta)
    scale = max_norm / norm
    return [(t.detach().to(torch.float64) * scale).to(t.dtype) for t in delta]


class Clipped:
    """An aggregator that clips every update to `max_norm` before handing it to `inner`."""

    def __init__(self, inner: Aggregator, max_norm: float) -> None:
        self._inner = inner
        self._max_norm = max_norm

    def add(self, delta: Sequence[torch.Tensor], weight: float) -> None:
        """Clip `delta`, then add it to the inner aggregator with its weight."""
        self._inner.add(clip_to_norm(delta, self._max_norm), weight)

    def result(self) -> list[torch.Tensor]:
        """The inner aggregator's result."""
        return self._inner.result()
