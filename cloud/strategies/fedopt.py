"""The adaptive server step shared by FedAdam, FedYogi and FedAdagrad (Reddi et al. 2021).

With Delta_t the round's FedAvg aggregate (Algorithm 2 of the paper, no bias correction):

    m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t              m_{-1} = 0
    v_t = V(v_{-1}, Delta_t^2, beta2)                          v_{-1} = tau^2
    the global model moves by  eta * m_t / (sqrt(v_t) + tau)

V is the one thing the three optimizers disagree on; each unit file passes its own. Not a
registered unit itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from fedstream.cloud.strategies._compose import Composed
from fedstream.cloud.strategies.base import (
    ServerState,
    Strategy,
    check_clip_norm,
    is_real,
    read_slot,
    require,
)
from fedstream.cloud.strategies.fedavg import FedAvg

VUpdate = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
"""(v_{t-1}, Delta_t^2, beta2) -> v_t, on float64 tensors; must not change its inputs."""

_UNIT = "fedadam/fedyogi/fedadagrad"


@dataclass(frozen=True, slots=True, kw_only=True)
class FedOptParams:
    """Adaptive server optimizer settings (the paper's defaults).

    Args:
        eta: Server learning rate, > 0.
        beta1: First-moment decay, in [0, 1).
        beta2: Second-moment decay, in [0, 1) (FedAdagrad does not use it).
        tau: Adaptivity (the denominator's epsilon, and sqrt of the initial v), > 0.
        clip_norm: Scale each update to global L2 norm <= clip_norm first; None: no clipping.

    Raises:
        ConfigError: BAD_CONFIG for a value out of range or not a number.
    """

    eta: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        require(is_real(self.eta) and self.eta > 0, _UNIT,
                f"eta must be a positive number; got {self.eta!r}")
        for field, value in (("beta1", self.beta1), ("beta2", self.beta2)):
            require(is_real(value) and 0 <= value < 1, _UNIT,
                    f"{field} must be a number in [0, 1); got {value!r}")
        require(is_real(self.tau) and self.tau > 0, _UNIT,
                f"tau must be a positive number; got {self.tau!r}")
        check_clip_norm(_UNIT, self.clip_norm)


def adaptive_step(aggregate: Sequence[torch.Tensor], state: ServerState | None, *,
                  params: FedOptParams, v_update: VUpdate,
                  ) -> tuple[list[torch.Tensor], ServerState]:
    """One adaptive server step (module docstring), pure, in float64.

    State: {"m": [...], "v": [...]}, float32; None means the first round.
    """
    ms_prev = read_slot(state, "m", aggregate, 0.0)
    vs_prev = read_slot(state, "v", aggregate, params.tau ** 2)
    deltas, ms, vs = [], [], []
    for d32, m_prev, v_prev in zip(aggregate, ms_prev, vs_prev, strict=True):
        d = d32.detach().to(torch.float64)
        m = params.beta1 * m_prev + (1 - params.beta1) * d
        v = v_update(v_prev, d * d, params.beta2)
        deltas.append((params.eta * m / (torch.sqrt(v) + params.tau)).to(torch.float32))
        ms.append(m.to(torch.float32))
        vs.append(v.to(torch.float32))
    return deltas, {"m": ms, "v": vs}


def fedopt_strategy(name: str, v_update: VUpdate, params: FedOptParams) -> Strategy:
    """The FedAvg aggregator composed with `adaptive_step` using `v_update`."""
    return Composed(name, FedAvg, step=partial(adaptive_step, params=params, v_update=v_update),
                    clip_norm=params.clip_norm)
