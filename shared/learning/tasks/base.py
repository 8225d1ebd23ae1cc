"""What a task is: its loss and its scores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
from torch import nn

from fedstream.shared.learning.metrics import Metric
from fedstream.shared.protocol.arch import TaskKind


class Task(Protocol):
    """One task kind: the training loss, the scores and the targets' tensor type."""

    kind: TaskKind
    primary: Metric
    metrics: tuple[Metric, ...]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training objective of a batch (a scalar)."""
        ...

    def scores(self, output: torch.Tensor, target: torch.Tensor) -> Mapping[str, float]:
        """Every metric of the task on a batch of predictions."""
        ...


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, features: torch.Tensor,
             target: torch.Tensor) -> dict[str, float]:
    """Every metric of `task` for `model` on a set, in eval mode.

    Raises:
        ValueError: the set is empty.
    """
    if len(target) == 0:
        raise ValueError("evaluation needs at least one sample")
    model.eval()
    output = model(features).float()
    return {k: float(v) for k, v in task.scores(output, target).items()}
