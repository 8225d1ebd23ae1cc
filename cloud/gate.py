"""The promotion gate (pure): may a candidate replace the serving model?

Both models are scored on the same evaluation windows at the same moment, so a window that
just arrived counts for both. The candidate is refused if it loses more than a tolerance on
the newest window (what the fleet sees now) or on the mean of the past windows (what it must
not forget). "Loses" is measured in the task's primary metric, in its own units, and in the
direction the metric says is better: a drop of accuracy, a rise of mean absolute error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedstream.cloud.forgetting import Evals
from fedstream.shared.errors import Reason
from fedstream.shared.learning.metrics import Metric


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The gate's decision; `reason` is empty when the candidate is promoted."""

    promote: bool
    reason: Reason | None
    detail: str


def judge(candidate: Evals, serving: Evals, order: Sequence[str], *, tolerance_newest: float,
          tolerance_past: float, metric: Metric) -> Verdict:
    """Compare a candidate with the serving model on the windows in `order` (oldest first).

    Args:
        candidate: The candidate's score per window.
        serving: The serving model's score per window.
        order: The windows, oldest first.
        tolerance_newest: Largest loss allowed on the newest window, in the metric's units.
        tolerance_past: Largest loss allowed on the mean of the past windows.
        metric: What the scores are, and which way is better.

    Raises:
        ValueError: a row lacks a window of `order`.
    """
    missing = [w for w in order if w not in candidate or w not in serving]
    if missing:
        raise ValueError(f"windows {missing} are not scored for both models")
    if not order:
        return Verdict(promote=True, reason=None, detail="no evaluation windows yet")
    newest, past = order[-1], order[:-1]
    if metric.loss_of(serving[newest], candidate[newest]) > tolerance_newest:
        return Verdict(promote=False, reason=Reason.REGRESSED_NEWEST,
                       detail=f"window {newest}: {metric.name} {candidate[newest]:.4f} vs serving "
                              f"{serving[newest]:.4f} (tolerance {tolerance_newest})")
    if past:
        mean_candidate = sum(candidate[w] for w in past) / len(past)
        mean_serving = sum(serving[w] for w in past) / len(past)
        if metric.loss_of(mean_serving, mean_candidate) > tolerance_past:
            return Verdict(promote=False, reason=Reason.REGRESSED_PAST,
                           detail=f"{len(past)} past windows: mean {metric.name} "
                                  f"{mean_candidate:.4f} vs "
                                  f"serving {mean_serving:.4f} (tolerance {tolerance_past})")
    return Verdict(promote=True, reason=None,
                   detail=f"newest {metric.name} {candidate[newest]:.4f} vs "
                          f"{serving[newest]:.4f} over "
                          f"{len(order)} windows")
