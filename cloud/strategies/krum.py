"""Multi-Krum (Blanchard et al. 2017): average the updates closest to their neighbours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedstream.cloud.strategies._buffer import UpdateBuffer
from fedstream.cloud.strategies._compose import Composed
from fedstream.cloud.strategies.base import STRATEGIES, Strategy, check_clip_norm, require
from fedstream.cloud.strategies.fedavg import FedAvg


@dataclass(frozen=True, slots=True, kw_only=True)
class KrumParams:
    """Multi-Krum settings.

    Args:
        byzantine: f, the number of Byzantine updates to tolerate, an int >= 0; a round then
            needs n >= 2f + 3 updates.
        select: m, how many best-scoring updates to average, an int >= 1; None means n - f.
        clip_norm: Scale each update to global L2 norm <= clip_norm first; None: no clipping.

    Raises:
        ConfigError: BAD_CONFIG for a value out of range or not an int.
    """

    byzantine: int = 1
    select: int | None = None
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        f, m = self.byzantine, self.select
        require(type(f) is int and f >= 0, "krum", f"byzantine must be an int >= 0; got {f!r}")
        require(m is None or (type(m) is int and m >= 1), "krum",
                f"select must be an int >= 1 or None; got {m!r}")
        check_clip_norm("krum", self.clip_norm)


def squared_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """||a - b||^2 over all tensors, in float64."""
    return sum(float(torch.sum(torch.square(x.to(torch.float64) - y.to(torch.float64))))
               for x, y in zip(a, b, strict=True))


def krum_scores(updates: Sequence[Sequence[torch.Tensor]], byzantine: int) -> list[float]:
    """score(i) = sum of the n - f - 2 smallest ||d_i - d_j||^2 over j != i."""
    n = len(updates)
    dist = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            dist[i][j] = dist[j][i] = squared_distance(updates[i], updates[j])
    k = n - byzantine - 2
    return [sum(sorted(dist[i][j] for j in range(n) if j != i)[:k]) for i in range(n)]


class Krum:
    """Holds every update (O(updates x model)); `result` averages the m best-scoring ones,
    sample-weighted, ties going to the earlier update; O(n^2 x model) time."""

    def __init__(self, params: KrumParams) -> None:
        self._params = params
        self._buffer = UpdateBuffer()

    def add(self, delta: Sequence[torch.Tensor], weight: float) -> None:
        """Keep a copy of the update."""
        self._buffer.add(delta, weight)

    def result(self) -> list[torch.Tensor]:
        """The weighted mean of the selected updates, as float32.

        Raises:
            ValueError: Nothing added, fewer than 2f + 3 updates, or select > n.
        """
        n, f = self._buffer.require_some(), self._params.byzantine
        if n < 2 * f + 3:
            raise ValueError(f"krum: {n} updates cannot tolerate byzantine={f}; "
                             f"it needs at least 2f + 3 = {2 * f + 3}")
        m = n - f if self._params.select is None else self._params.select
        if m > n:
            raise ValueError(f"krum: cannot select {m} of {n} updates")
        scores = krum_scores(self._buffer.updates, f)
        mean = FedAvg()
        for i in sorted(range(n), key=lambda i: (scores[i], i))[:m]:
            mean.add(self._buffer.updates[i], self._buffer.weights[i])
        return mean.result()


@STRATEGIES.add("krum", "multi-Krum: weighted mean of the updates nearest their neighbours")
def build_krum(*, byzantine: int = 1, select: int | None = None,
               clip_norm: float | None = None) -> Strategy:
    """Build multi-Krum (see `KrumParams`); step = identity, no state."""
    params = KrumParams(byzantine=byzantine, select=select, clip_norm=clip_norm)
    return Composed("krum", lambda: Krum(params), clip_norm=params.clip_norm)
