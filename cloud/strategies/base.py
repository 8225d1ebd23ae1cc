"""The aggregation contract, plus the checks and norms every strategy shares.

A `Strategy` lives as long as the service and is built from config by name. Each round it hands
out a fresh `Aggregator` that folds the accepted updates into one delta; `step` then turns that
aggregate into the delta applied to the global model, threading explicit `ServerState` (the server
optimizer's moments, Reddi et al. 2021) from one round to the next. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard

import torch

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.registry import Registry

ServerState = dict[str, list[torch.Tensor]]
"""Server optimizer state between rounds, e.g. {"m": [...], "v": [...]}; float32 tensors only."""


class Aggregator(Protocol):
    """Folds one round's update deltas into one delta."""

    def add(self, delta: Sequence[torch.Tensor], weight: float) -> None:
        """Take one update with its weight (its sample count); ValueError for a bad update."""
        ...

    def result(self) -> list[torch.Tensor]:
        """The aggregated delta as float32; raises ValueError if nothing was added."""
        ...


class Strategy(Protocol):
    """One per service: builds each round's aggregator and runs the server step."""

    name: str

    def new_round(self) -> Aggregator:
        """A fresh, empty aggregator for one round."""
        ...

    def step(self, aggregate: Sequence[torch.Tensor], state: ServerState | None,
             ) -> tuple[list[torch.Tensor], ServerState | None]:
        """Pure: (delta to apply to the global model, new state); never changes its inputs."""
        ...


STRATEGIES: Registry[Strategy] = Registry("strategy")


def flat_norm(delta: Sequence[torch.Tensor]) -> float:
    """Global L2 norm over all tensors as if concatenated: sqrt(sum_k sum_i d_k[i]^2), float64."""
    # vector_norm accumulates in float64 without a float64 copy of the tensor: half the time.
    return math.sqrt(sum(float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64)) ** 2
                         for t in delta))


def check_weight(weight: float) -> None:
    """Raise ValueError unless `weight` is a positive finite number."""
    if not (weight > 0 and math.isfinite(weight)):  # NaN fails `> 0`
        raise ValueError(f"weight must be positive and finite, got {weight}")


def check_like(delta: Sequence[torch.Tensor], first: Sequence[torch.Tensor]) -> None:
    """Raise ValueError unless `delta` has the tensor count and shapes of `first`."""
    if [tuple(t.shape) for t in delta] != [tuple(t.shape) for t in first]:
        raise ValueError("update tensors do not match the shapes of the first update")


def read_slot(state: ServerState | None, key: str, like: Sequence[torch.Tensor],
              fill: float) -> list[torch.Tensor]:
    """Float64 copies of `state[key]`, or tensors of `fill` shaped like `like` if state is None.

    Raises:
        ValueError: The state lacks `key` or its tensors do not match `like`'s shapes.
    """
    if state is None:
        return [torch.full(t.shape, fill, dtype=torch.float64) for t in like]
    if key not in state:
        raise ValueError(f"server state has no {key!r}; keys: {sorted(state)}")
    slot = state[key]
    if [tuple(t.shape) for t in slot] != [tuple(t.shape) for t in like]:
        raise ValueError(f"server state {key!r} does not match the aggregate's tensor shapes")
    return [t.detach().to(torch.float64, copy=True) for t in slot]


def is_real(value: object) -> TypeGuard[float]:
    """True for a finite int or float (not a bool): what a numeric config value must be."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def require(ok: bool, unit: str, message: str) -> None:
    """Raise ConfigError(BAD_CONFIG, "<unit>: <message>") unless `ok`."""
    if not ok:
        raise ConfigError(Reason.BAD_CONFIG, f"{unit}: {message}")


def check_clip_norm(unit: str, clip_norm: object) -> None:
    """The `clip_norm` every strategy takes must be None or a positive finite number."""
    require(clip_norm is None or (is_real(clip_norm) and clip_norm > 0), unit,
            f"clip_norm must be a positive number or None; got {clip_norm!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipParams:
    """Parameters of a strategy whose only knob is update-norm clipping.

    Args:
        unit: The strategy's name, for error messages.
        clip_norm: Scale each update to global L2 norm <= clip_norm first; None: no clipping.

    Raises:
        ConfigError: BAD_CONFIG for a clip_norm that is not None or a positive number.
    """

    unit: str
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        check_clip_norm(self.unit, self.clip_norm)
