"""FedYogi: the FedAvg aggregate + a Yogi server step (Reddi et al. 2021)."""

from __future__ import annotations

import torch

from fedstream.cloud.strategies.base import STRATEGIES, Strategy
from fedstream.cloud.strategies.fedopt import FedOptParams, fedopt_strategy


def yogi_v(v: torch.Tensor, d2: torch.Tensor, beta2: float) -> torch.Tensor:
    """v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2); stays >= 0."""
    return v - (1 - beta2) * d2 * torch.sign(v - d2)


@STRATEGIES.add("fedyogi", "FedAvg aggregate + Yogi server step (Reddi et al. 2021)")
def build_fedyogi(*, eta: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99,
                  tau: float = 1e-3, clip_norm: float | None = None) -> Strategy:
    """Build FedYogi (see `FedOptParams`)."""
    params = FedOptParams(eta=eta, beta1=beta1, beta2=beta2, tau=tau, clip_norm=clip_norm)
    return fedopt_strategy("fedyogi", yogi_v, params)
