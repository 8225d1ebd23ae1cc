"""Regression (forecasting included): mean squared error, scored by MAE and RMSE."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional

from fedstream.shared.learning.metrics import MAE, RMSE, Metric
from fedstream.shared.protocol.arch import TaskKind


class Regression:
    """Targets are float32 `[N, outputs]`; outputs are the predicted values, same shape."""

    kind: TaskKind = TaskKind.REGRESSION
    primary: Metric = MAE
    metrics: tuple[Metric, ...] = (MAE, RMSE)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error over every predicted value."""
        return functional.mse_loss(output, target.to(output.dtype))

    def scores(self, output: torch.Tensor, target: torch.Tensor) -> Mapping[str, float]:
        """Mean absolute error and root mean squared error over every predicted value."""
        err = output.float() - target.float()
        return {"mae": float(err.abs().mean()), "rmse": float(err.pow(2).mean().sqrt())}
