"""The aggregation contract: add weighted updates one at a time, then read the result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from fedstream.shared.registry import Registry


class Aggregator(Protocol):
    """Folds update deltas into one delta."""

    def add(self, delta: Sequence[torch.Tensor], weight: float) -> None:
        """Take one update with its weight (its sample count for FedAvg)."""
        ...

    def result(self) -> list[torch.Tensor]:
        """The aggregated delta; raises ValueError if nothing was added."""
        ...


STRATEGIES: Registry[Aggregator] = Registry("strategy")
