"""Classification: cross-entropy over class logits, scored by top-1 accuracy."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional

from fedstream.shared.learning.metrics import ACCURACY, Metric
from fedstream.shared.protocol.arch import TaskKind


class Classification:
    """Targets are int64 class indices `[N]`; outputs are logits `[N, classes]`."""

    kind: TaskKind = TaskKind.CLASSIFICATION
    primary: Metric = ACCURACY
    metrics: tuple[Metric, ...] = (ACCURACY,)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy."""
        return functional.cross_entropy(output, target)

    def scores(self, output: torch.Tensor, target: torch.Tensor) -> Mapping[str, float]:
        """Top-1 accuracy."""
        return {"accuracy": float((output.argmax(dim=1) == target).float().mean())}
