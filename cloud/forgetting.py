"""Continual-learning metrics over a score matrix (pure).

Rows are model versions in the order they were served, columns are evaluation windows (oldest
first); an entry is the score of that version on that window in the task's primary metric
(accuracy, or mean absolute error). The papers' formulas assume higher is better; here every
difference is taken on `metric.gain(score)`, so forgetting is positive when a model got worse
on a window and backward transfer negative, for an error metric as for accuracy.

A window's "learned" entry is the first row that has it: the version produced while that
window was the newest, i.e. right after the fleet trained on its distribution. For the last
row (the version being judged), with `past` the windows other than the newest that an earlier
row has:

- average score: the mean over every window of the last row (Chaudhry et al. 2018, A_k),
  in the metric's own units (`avg_accuracy`, `avg_mae`);
- forgetting: mean over `past` of (best earlier gain on the window - last gain on it)
  (Chaudhry et al. 2018, F_k);
- backward transfer: mean over `past` of (last gain - learned gain) (Lopez-Paz &
  Ranzato 2017, BWT); negative means forgetting.

Windows no earlier row has do not count toward forgetting or backward transfer (there is
nothing to have forgotten yet); with none, both are 0.

Where the cloud's windows differ from the papers' task test sets: scores are on each window's
evaluation rows, which the cloud never trains on (`windows.eval_rows`), but a window keeps
filling (up to its cap) after its first score, so one column's entries may be on slightly
different rows. The "learned" entry is measured after the fleet trained on the window's
distribution, before the cloud did. `bench/drift.py` also computes the metrics on separate,
larger held-out test sets per distribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedstream.shared.learning.metrics import Metric

Evals = Mapping[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgettingMetrics:
    """The continual-learning summary of one version.

    Attributes:
        average: Mean score of the version over the windows, in the metric's units.
        forgetting: Mean loss of gain on past windows since their best (positive = forgot).
        bwt: Mean gain on past windows since they were learned (negative = forgot).
        windows: Windows scored.
        metric: The metric the scores are in.
    """

    average: float
    forgetting: float
    bwt: float
    windows: int
    metric: Metric

    def to_dict(self) -> dict[str, float | int]:
        """Rounded scalars for the registry and the CLI (`avg_accuracy`, `avg_mae`, ...)."""
        return {f"avg_{self.metric.name}": round(self.average, 4),
                "forgetting": round(self.forgetting, 4), "bwt": round(self.bwt, 4),
                "windows": self.windows}


def metrics_of(history: Sequence[Evals], last: Evals, order: Sequence[str], *,
               metric: Metric) -> ForgettingMetrics:
    """Metrics of `last` given the rows served before it.

    Args:
        history: Earlier rows, oldest first (each maps window -> score).
        last: The row being judged; must have every window in `order`.
        order: Every window, oldest first; the last one is the newest.
        metric: What the scores are, and which way is better.

    Raises:
        ValueError: `last` lacks a window of `order`.
    """
    missing = [w for w in order if w not in last]
    if missing:
        raise ValueError(f"the last row lacks windows {missing}")
    if not order:
        return ForgettingMetrics(average=0.0, forgetting=0.0, bwt=0.0, windows=0,
                                 metric=metric)
    gain = metric.gain
    drops, transfers = [], []
    for window in order[:-1]:
        earlier = [gain(row[window]) for row in history if window in row]
        if earlier:
            drops.append(max(earlier) - gain(last[window]))
            transfers.append(gain(last[window]) - earlier[0])
    return ForgettingMetrics(average=_mean([last[w] for w in order]), forgetting=_mean(drops),
                             bwt=_mean(transfers), windows=len(order), metric=metric)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
