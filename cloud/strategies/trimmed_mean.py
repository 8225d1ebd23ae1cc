"""Coordinate-wise trimmed mean (Yin et al. 2018): robust to a few extreme updates."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fedstream.cloud.strategies._buffer import UpdateBuffer
from fedstream.cloud.strategies._compose import Composed
from fedstream.cloud.strategies.base import STRATEGIES, Strategy, check_clip_norm, is_real, require


class SortedMean:
    """Per coordinate, sort the n values and average the middle n - 2c, c = cut(n) per end.

    Unweighted: weights are checked but not used. Holds every update, O(updates x model), plus
    a transient float64 stack of one tensor across updates. Sorting and summing along the update
    axis are elementwise over coordinates, so equal inputs give bit-identical results.

    Args:
        cut: How many values to drop at each end for n updates; clamped to (n - 1) // 2.
    """

    def __init__(self, cut: Callable[[int], int]) -> None:
        self._cut = cut
        self._buffer = UpdateBuffer()

    def add(self, delta: Sequence[torch.Tensor], weight: float) -> None:
        """Keep a copy of the update."""
        self._buffer.add(delta, weight)

    def result(self) -> list[torch.Tensor]:
        """The trimmed mean of each coordinate, as float32."""
        n = self._buffer.require_some()
        c = min(max(self._cut(n), 0), (n - 1) // 2)
        out = []
        for k in range(len(self._buffer.updates[0])):
            middle = torch.sort(self._buffer.stacked(k), dim=0).values[c:n - c]
            out.append((middle.sum(dim=0) / (n - 2 * c)).to(torch.float32))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TrimmedMeanParams:
    """How much to trim.

    Args:
        trim: Fraction of values dropped at EACH end of every coordinate, in [0, 0.5):
            floor(trim * n) of n updates (so 0.1 drops nothing below 10 updates).
        clip_norm: Scale each update to global L2 norm <= clip_norm first; None: no clipping.

    Raises:
        ConfigError: BAD_CONFIG for a value out of range or not a number.
    """

    trim: float = 0.1
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        require(is_real(self.trim) and 0 <= self.trim < 0.5, "trimmed_mean",
                f"trim must be a number in [0, 0.5); got {self.trim!r}")
        check_clip_norm("trimmed_mean", self.clip_norm)


def trim_count(trim: float, n: int) -> int:
    """floor(trim * n), forgiving float error just below an integer (0.29 * 100 gives 29)."""
    return math.floor(trim * n + 1e-9)


@STRATEGIES.add("trimmed_mean",
                "coordinate-wise mean without the trim fraction of extremes at each end")
def build_trimmed_mean(*, trim: float = 0.1, clip_norm: float | None = None) -> Strategy:
    """Build the trimmed mean (see `TrimmedMeanParams`); step = identity, no state."""
    params = TrimmedMeanParams(trim=trim, clip_norm=clip_norm)
    return Composed("trimmed_mean", lambda: SortedMean(lambda n: trim_count(params.trim, n)),
                    clip_norm=params.clip_norm)
