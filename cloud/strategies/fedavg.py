"""Sample-weighted FedAvg, computed streaming: memory is one model, whatever the update count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedstream.cloud.strategies._compose import Composed, identity_step
from fedstream.cloud.strategies.base import (
    STRATEGIES,
    Strategy,
    check_clip_norm,
    check_like,
    check_weight,
)


class FedAvg:
    """Weighted mean of deltas: sum(w_i * d_i) / sum(w_i), accumulated in float64.

    Each `add` folds into running sums in arrival order (elementwise, so bit-identical for the
    same updates in the same order); memory is one float64 copy of the model.
    """

    def __init__(self) -> None:
        self._sums: list[torch.Tensor] | None = None
        self._weight = 0.0

    def add(self, delta: Sequence[torch.Tensor], weight: float) -> None:
        """Accumulate `weight * delta`."""
        check_weight(weight)
        if self._sums is None:
            self._sums = [torch.zeros(t.shape, dtype=torch.float64) for t in delta]
        check_like(delta, self._sums)
        for acc, t in zip(self._sums, delta, strict=True):
            acc.add_(t.detach().to(torch.float64), alpha=weight)
        self._weight += weight

    def result(self) -> list[torch.Tensor]:
        """The weighted mean delta, as float32."""
        if self._sums is None:
            raise ValueError("no update was added")
        return [(acc / self._weight).to(torch.float32) for acc in self._sums]


@dataclass(frozen=True, slots=True, kw_only=True)
class FedAvgParams:
    """FedAvg's only knob.

    Args:
        clip_norm: Scale each update to global L2 norm <= clip_norm first; None: no clipping.

    Raises:
        ConfigError: BAD_CONFIG for a clip_norm that is not None or a positive number.
    """

    clip_norm: float | None = None

    def __post_init__(self) -> None:
        check_clip_norm("fedavg", self.clip_norm)


@STRATEGIES.add("fedavg", "sample-weighted mean of deltas (McMahan et al. 2017), streaming")
def build_fedavg(*, clip_norm: float | None = None) -> Strategy:
    """Build FedAvg: aggregate = weighted mean, step = identity, no server state."""
    params = FedAvgParams(clip_norm=clip_norm)
    return Composed("fedavg", FedAvg, step=identity_step, clip_norm=params.clip_norm)
