"""Sample-weighted FedAvg, computed streaming: memory is one model, whatever the update count."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedstream.cloud.strategies._compose import Composed, identity_step
from fedstream.cloud.strategies.base import (
    STRATEGIES,
    ClipParams,
    Strategy,
    check_like,
    check_weight,
)

_SLICE = 1 << 14

class FedAvg:
    """Weighted mean of deltas: sum(w_i * d_i) / sum(w_i), accumulated in float32.

    Each `add` folds into running sums in arrival order (elementwise, so bit-identical for the
    same updates in the same order). The sums are float32 on purpose: with one decoded update
    alive at a time, peak memory is then ~2x the model instead of 3x+ with float64 sums
    (bench/aggregation.py); the rounding error grows like sqrt(n)·2^-24 relative, far below
    the noise of SGD deltas for any realistic number of updates per round.
    """

    def __init__(self) -> None:
        self._sums: list[torch.Tensor] | None = None
        self._weight = 0.0

    def add(self, delta: Sequence[torch.Tensor], weight: float) -> None:
        """Accumulate `weight * delta`."""
        check_weight(weight)
        if self._sums is None:
            self._sums = [torch.zeros(t.shape, dtype=torch.float32) for t in delta]
        check_like(delta, self._sums)
        for acc, t in zip(self._sums, delta, strict=True):
            # Slice by slice: 16K elements stay on one thread, which on a busy 2-core host beat
            # both the whole-tensor add and larger slices (bench/aggregation.py).
            for a, d in zip(torch.split(acc.view(-1), _SLICE),
                            torch.split(t.detach().reshape(-1), _SLICE),
                            strict=True):
                a.add_(d, alpha=weight)
        self._weight += weight

    def result(self) -> list[torch.Tensor]:
        """The weighted mean delta, as float32."""
        if self._sums is None:
            raise ValueError("no update was added")
        out = []
        for acc in self._sums:
            mean = torch.empty(acc.shape, dtype=torch.float32)
            for o, a in zip(torch.split(mean.view(-1), _SLICE), torch.split(acc.view(-1), _SLICE),
                            strict=True):
                o.copy_(a / self._weight)
            out.append(mean)
        return out


@STRATEGIES.add("fedavg", "sample-weighted mean of deltas (McMahan et al. 2017), streaming")
def build_fedavg(*, clip_norm: float | None = None) -> Strategy:
    """Build FedAvg: aggregate = weighted mean, step = identity, no server state."""
    params = ClipParams(unit="fedavg", clip_norm=clip_norm)
    return Composed("fedavg", FedAvg, step=identity_step, clip_norm=params.clip_norm)
