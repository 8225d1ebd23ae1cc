"""FedAdagrad: the FedAvg aggregate + an Adagrad server step (Reddi et al. 2021)."""

from __future__ import annotations

import torch

from fedstream.cloud.strategies.base import STRATEGIES, Strategy
from fedstream.cloud.strategies.fedopt import FedOptParams, fedopt_strategy


def adagrad_v(v: torch.Tensor, d2: torch.Tensor, beta2: float) -> torch.Tensor:
    """v_t = v_{t-1} + Delta_t^2 (beta2 is not used)."""
    del beta2
    return v + d2


@STRATEGIES.add("fedadagrad", "FedAvg aggregate + Adagrad server step (Reddi et al. 2021)")
def build_fedadagrad(*, eta: float = 1e-2, beta1: float = 0.9, tau: float = 1e-3,
                     clip_norm: float | None = None) -> Strategy:
    """Build FedAdagrad (see `FedOptParams`); it takes no beta2, so configuring one is an error."""
    params = FedOptParams(eta=eta, beta1=beta1, tau=tau, clip_norm=clip_norm)
    return fedopt_strategy("fedadagrad", adagrad_v, params)
