"""A strategy assembled from parts: a per-round aggregator, optional clipping, a server step."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fedstream.cloud.strategies._clip import Clipped
from fedstream.cloud.strategies.base import Aggregator, ServerState

ServerStep = Callable[[Sequence[torch.Tensor], ServerState | None],
                      tuple[list[torch.Tensor], ServerState | None]]
"""Pure (aggregate, state) -> (delta to apply, new state); the `Strategy.step` contract."""


def identity_step(aggregate: Sequence[torch.Tensor], state: ServerState | None,
                  ) -> tuple[list[torch.Tensor], ServerState | None]:
    """Apply the aggregate as it is (new float32 tensors); no server state."""
    del state  # stateless
    return [t.detach().to(torch.float32, copy=True) for t in aggregate], None


class Composed:
    """A `Strategy` made of parts, none of which knows about the others.

    Args:
        name: The registered name.
        aggregator: Builds one round's aggregator.
        step: The server step applied to each round's aggregate.
        clip_norm: If set, every update is scaled to global L2 norm <= clip_norm before it is
            aggregated.
    """

    def __init__(self, name: str, aggregator: Callable[[], Aggregator], *,
                 step: ServerStep = identity_step, clip_norm: float | None = None) -> None:
        self.name = name
        self._aggregator = aggregator
        self._step = step
        self._clip_norm = clip_norm

    def new_round(self) -> Aggregator:
        """A fresh aggregator, wrapped in `Clipped` when `clip_norm` is set."""
        agg = self._aggregator()
        return agg if self._clip_norm is None else Clipped(agg, self._clip_norm)

    def step(self, aggregate: Sequence[torch.Tensor], state: ServerState | None,
             ) -> tuple[list[torch.Tensor], ServerState | None]:
        """Run the server step (pure)."""
        return self._step(aggregate, state)
