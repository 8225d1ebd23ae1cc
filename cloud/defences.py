"""Defences against manipulated updates, on by default (pure).

An edge's sample count is a self-report and its update's size is its own choice: one edge
claiming 10⁹ samples, or sending its delta scaled x100, would own a plain weighted average.
Both are bounded by what the round's other updates look like:

- each weight is capped at `sample_cap` times the round's median weight (and at an absolute
  `max_samples`), so no claim counts for more than a typical edge's times the factor;
- each update is scaled down to `clip` times the round's median update norm (adaptive
  clipping: the bound follows the model's own scale, round after round, with nothing to tune
  per model), so a blown-up update counts as a typical one.

With both at 1 an attacker's update weighs at most a median edge's, whatever it claims. The
robust strategies (`median`, `trimmed_mean`, `krum`) remain for what this does not cover,
such as a coordinated majority.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """What the defences did to one round's updates.

    Attributes:
        weights: The weights to aggregate with, capped.
        scales: A factor per update (1.0 or less) its delta is multiplied by.
        capped: How many weights were capped.
        clipped: How many updates were scaled down.
        clip_norm: The norm bound used, or None without clipping.
    """

    weights: list[float]
    scales: list[float]
    capped: int
    clipped: int
    clip_norm: float | None

    def lineage(self) -> dict[str, float | int]:
        """Scalars for the version's lineage."""
        out: dict[str, float | int] = {"defence_capped": self.capped,
                                       "defence_clipped": self.clipped}
        if self.clip_norm is not None:
            out["defence_clip_norm"] = round(self.clip_norm, 6)
        return out


def bound(weights: Sequence[float], norms: Sequence[float], *, sample_cap: float, clip: float,
          max_samples: float) -> Bounds:
    """Cap the weights and choose each update's scale.

    Args:
        weights: Each update's weight (its sample count, maybe discounted for staleness).
        norms: Each update's global L2 norm, in the same order.
        sample_cap: A weight counts at most this many times the round's median weight;
            0 turns the relative cap off.
        clip: An update is scaled to at most this many times the round's median norm; 0
            turns clipping off.
        max_samples: No weight counts for more than this, whatever the median.

    Raises:
        ValueError: the sequences differ in length or are empty, or a factor is negative.
    """
    if len(weights) != len(norms) or not weights:
        raise ValueError(f"need one norm per weight, got {len(weights)} and {len(norms)}")
    if sample_cap < 0 or clip < 0 or max_samples <= 0:
        raise ValueError(f"factors must be >= 0 and max_samples > 0, got {sample_cap}, "
                         f"{clip}, {max_samples}")
    cap = min(max_samples, sample_cap * statistics.median(weights)) if sample_cap else max_samples
    capped = [min(w, cap) for w in weights]
    limit = clip * statistics.median(norms) if clip else None
    scales = [1.0 if limit is None or n <= limit or n == 0 else limit / n for n in norms]
    return Bounds(weights=capped, scales=scales,
                  capped=sum(c < w for c, w in zip(capped, weights, strict=True)),
                  clipped=sum(s < 1.0 for s in scales), clip_norm=limit)
