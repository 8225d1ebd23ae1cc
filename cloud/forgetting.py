"""Continual-learning metrics over an accuracy matrix (pure).

Rows are model versions in the order they were served, columns are evaluation windows (oldest
first); an entry is the accuracy of that version on that window. A window's "learned" entry
is the first row that has it: the version produced while that window was the newest, i.e.
right after the fleet trained on its distribution. For the last row (the version being judged),
with `past` the windows other than the newest that an earlier row has:

- average accuracy: the mean over every window of the last row (Chaudhry et al. 2018, A_k);
- forgetting: mean over `past` of (best earlier accuracy on the window - last accuracy on it)
  (Chaudhry et al. 2018, F_k);
- backward transfer: mean over `past` of (last accuracy - learned accuracy) (Lopez-Paz &
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

Evals = Mapping[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgettingMetrics:
    """The continual-learning summary of one version."""

    avg_accuracy: float
    forgetting: float
    bwt: float
    windows: int

    def to_dict(self) -> dict[str, float | int]:
        """Rounded scalars for the registry and the CLI."""
        return {"avg_accuracy": round(self.avg_accuracy, 4),
                "forgetting": round(self.forgetting, 4), "bwt": round(self.bwt, 4),
                "windows": self.windows}


def metrics_of(history: Sequence[Evals], last: Evals, order: Sequence[str]) -> ForgettingMetrics:
    """Metrics of `last` given the rows served before it.

    Args:
        history: Earlier rows, oldest first (each maps window -> accuracy).
        last: The row being judged; must have every window in `order`.
        order: Every window, oldest first; the last one is the newest.

    Raises:
        ValueError: `last` lacks a window of `order`.
    """
    missing = [w for w in order if w not in last]
    if missing:
        raise ValueError(f"the last row lacks windows {missing}")
    if not order:
        return ForgettingMetrics(avg_accuracy=0.0, forgetting=0.0, bwt=0.0, windows=0)
    drops, transfers = [], []
    for window in order[:-1]:
        earlier = [row[window] for row in history if window in row]
        if earlier:
            drops.append(max(earlier) - last[window])
            transfers.append(last[window] - earlier[0])
    return ForgettingMetrics(avg_accuracy=_mean([last[w] for w in order]),
                             forgetting=_mean(drops), bwt=_mean(transfers), windows=len(order))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
