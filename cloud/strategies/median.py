"""Coordinate-wise median (Yin et al. 2018): robust to up to half the updates being extreme."""

from __future__ import annotations

from fedstream.cloud.strategies._compose import Composed
from fedstream.cloud.strategies.base import STRATEGIES, ClipParams, Strategy
from fedstream.cloud.strategies.trimmed_mean import SortedMean


def median_cut(n: int) -> int:
    """Drop (n - 1) // 2 values per end: the middle value for odd n, the mean of the two
    middle values for even n."""
    return (n - 1) // 2


@STRATEGIES.add("median", "coordinate-wise median of deltas, unweighted; holds all updates")
def build_median(*, clip_norm: float | None = None) -> Strategy:
    """Build the median: unweighted, memory O(updates x model); step = identity, no state."""
    params = ClipParams(unit="median", clip_norm=clip_norm)
    return Composed("median", lambda: SortedMean(median_cut), clip_norm=params.clip_norm)
