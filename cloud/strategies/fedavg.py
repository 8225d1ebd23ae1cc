"""Sample-weighted FedAvg, computed streaming: memory is one model, whatever the update count."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedstream.cloud.strategies.base import STRATEGIES


class FedAvg:
    """Weighted mean of deltas: sum(w_i * d_i) / sum(w_i), accumulated in float64."""

    def __init__(self) -> None:
        self._sums: list[torch.Tensor] | None = None
        self._weight = 0.0

    def add(self, delta: Sequence[torch.Tensor], weight: float) -> None:
        """Accumulate `weight * delta`."""
        if weight <= 0:
            raise ValueError(f"weight must be positive, got {weight}")
        if self._sums is None:
            self._sums = [torch.zeros(t.shape, dtype=torch.float64) for t in delta]
        if [t.shape for t in delta] != [s.shape for s in self._sums]:
            raise ValueError("update tensors do not match the shapes of the first update")
        for acc, t in zip(self._sums, delta, strict=True):
            acc.add_(t.to(torch.float64), alpha=weight)
        self._weight += weight

    def result(self) -> list[torch.Tensor]:
        """The weighted mean delta, as float32."""
        if self._sums is None:
            raise ValueError("no update was added")
        return [(acc / self._weight).to(torch.float32) for acc in self._sums]


@STRATEGIES.add("fedavg", "sample-weighted mean of deltas (McMahan et al.), streaming")
def build_fedavg() -> FedAvg:
    """Build a FedAvg aggregator (no parameters)."""
    return FedAvg()
