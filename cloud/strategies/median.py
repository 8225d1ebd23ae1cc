"""Coordinate-wise median (Yin et al. 2018): robust to up to half the updates being extreme."""

from __future__ import annotations

from dataclasses import dataclass

from fedstream.cloud.strategies._compose import Composed
from fedstream.cloud.strategies.base import STRATEGIES, Strategy, check_clip_norm
from fedstream.cloud.strategies.trimmed_mean import SortedMean


def median_cut(n: int) -> int:
    """Drop (n - 1) // 2 values per end: the middle value for odd n, the mean of the two
    middle values for even n."""
    return (n - 1) // 2


@dataclass(frozen=True, slots=True, kw_only=True)
class MedianParams:
    """Median's only knob.

    Args:
        clip_norm: Scale each update to global L2 norm <= clip_norm first; None: no clipping.

    Raises:
        ConfigError: BAD_CONFIG for a clip_norm that is not None or a positive number.
    """

    clip_norm: float | None = None

    def __post_init__(self) -> None:
        check_clip_norm("median", self.clip_norm)


@STRATEGIES.add("median", "coordinate-wise median of deltas, unweighted; holds all updates")
def build_median(*, clip_norm: float | None = None) -> Strategy:
    """Build the median: unweighted, memory O(updates x model); step = identity, no state."""
    params = MedianParams(clip_norm=clip_norm)
    return Composed("median", lambda: SortedMean(median_cut), clip_norm=params.clip_norm)
