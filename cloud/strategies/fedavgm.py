"""FedAvgM: the FedAvg aggregate plus server momentum (Hsu et al. 2019; Reddi et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch

from fedstream.cloud.strategies._compose import Composed
from fedstream.cloud.strategies.base import (
    STRATEGIES,
    ServerState,
    Strategy,
    check_clip_norm,
    is_real,
    read_slot,
    require,
)
from fedstream.cloud.strategies.fedavg import FedAvg


@dataclass(frozen=True, slots=True, kw_only=True)
class FedAvgMParams:
    """Server momentum settings.

    Args:
        server_lr: Server learning rate, > 0 (1.0 applies the momentum buffer as it is).
        beta: Momentum decay, in [0, 1); 0 is plain FedAvg scaled by server_lr.
        clip_norm: Scale each update to global L2 norm <= clip_norm first; None: no clipping.

    Raises:
        ConfigError: BAD_CONFIG for a value out of range or not a number.
    """

    server_lr: float = 1.0
    beta: float = 0.9
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        require(is_real(self.server_lr) and self.server_lr > 0, "fedavgm",
                f"server_lr must be a positive number; got {self.server_lr!r}")
        require(is_real(self.beta) and 0 <= self.beta < 1, "fedavgm",
                f"beta must be a number in [0, 1); got {self.beta!r}")
        check_clip_norm("fedavgm", self.clip_norm)


def momentum_step(aggregate: Sequence[torch.Tensor], state: ServerState | None, *,
                  params: FedAvgMParams) -> tuple[list[torch.Tensor], ServerState]:
    """One server momentum step, pure, in float64.

    v_t = beta * v_{t-1} + Delta_t (v_{-1} = 0), and the global model moves by server_lr * v_t.
    State: {"v": [...]}, float32.
    """
    deltas, vs = [], []
    for d, v_prev in zip(aggregate, read_slot(state, "v", aggregate, 0.0), strict=True):
        v = params.beta * v_prev + d.detach().to(torch.float64)
        deltas.append((params.server_lr * v).to(torch.float32))
        vs.append(v.to(torch.float32))
    return deltas, {"v": vs}


@STRATEGIES.add("fedavgm", "FedAvg aggregate + server momentum: v = beta*v + delta, apply lr*v")
def build_fedavgm(*, server_lr: float = 1.0, beta: float = 0.9,
                  clip_norm: float | None = None) -> Strategy:
    """Build FedAvgM (see `FedAvgMParams`)."""
    params = FedAvgMParams(server_lr=server_lr, beta=beta, clip_norm=clip_norm)
    return Composed("fedavgm", FedAvg, step=partial(momentum_step, params=params),
                    clip_norm=params.clip_norm)
