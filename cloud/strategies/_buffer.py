"""Holding every update of a round, for the aggregators that need them all at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedstream.cloud.strategies.base import check_like, check_weight


class UpdateBuffer:
    """Keeps a float32 copy of each update and its weight, in arrival order.

    Memory is O(updates x model): unlike FedAvg, the robust aggregators cannot stream.
    """

    def __init__(self) -> None:
        self.updates: list[list[torch.Tensor]] = []
        self.weights: list[float] = []

    def add(self, delta: Sequence[torch.Tensor], weight: float) -> None:
        """Check and copy one update; ValueError for a bad weight or mismatched shapes."""
        check_weight(weight)
        if self.updates:
            check_like(delta, self.updates[0])
        self.updates.append([t.detach().to(torch.float32, copy=True) for t in delta])
        self.weights.append(float(weight))

    def require_some(self) -> int:
        """The number of updates; ValueError if there is none."""
        if not self.updates:
            raise ValueError("no update was added")
        return len(self.updates)

    def stacked(self, k: int) -> torch.Tensor:
        """Tensor `k` of every update, stacked along a new first dimension, as float64."""
        return torch.stack([u[k] for u in self.updates]).to(torch.float64)
