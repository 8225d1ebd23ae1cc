"""The SGD loop both sides train with: edge rounds and cloud fine-tuning run the same steps."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from fedstream.shared.learning.backends import Backend
from fedstream.shared.learning.model import build_mlp, load_tensors

Batch = tuple[torch.Tensor, torch.Tensor]
Penalty = Callable[[nn.Module], torch.Tensor]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStats:
    """What a run of steps did.

    Attributes:
        steps: Optimizer steps taken.
        loss: Mean cross-entropy over those steps, without any penalty; 0.0 when no step ran.
    """

    steps: int
    loss: float


def prepare_sgd(layers: Sequence[int], start: Sequence[torch.Tensor], backend: Backend, *,
                lr: float, momentum: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Build the MLP from `start` and hand it with its SGD optimizer to the backend.

    Args:
        layers: MLP layer sizes.
        start: Initial tensors in spec order; copied, never modified.
        backend: Prepares the pair (IPEX returns new objects, may pack bf16 weights).
        lr: SGD learning rate.
        momentum: SGD momentum.

    Returns:
        The model and optimizer to pass to `train_steps`, in train mode.
    """
    plain = build_mlp(layers)
    load_tensors(plain, start)
    plain.train()
    sgd = torch.optim.SGD(plain.parameters(), lr=lr, momentum=momentum)
    return backend.prepare_training(plain, sgd)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, backend: Backend,
                batches: Iterable[Batch], *, penalty: Penalty | None = None) -> StepStats:
    """One SGD step per batch: cross-entropy (+ penalty), backward, optimizer step.

    Only the forward pass and its loss run inside `backend.autocast()`; the penalty is added
    outside it so a weight-space term stays in fp32 even when the forward pass is bf16.

    Args:
        model: Prepared by `backend` (see `prepare_sgd`).
        optimizer: The optimizer prepared with it.
        backend: Supplies the forward-pass autocast context.
        batches: (features, class labels) pairs, consumed lazily, one step each.
        penalty: Extra loss of the weights alone, e.g. an anchor toward earlier weights.

    Returns:
        Steps taken and their mean cross-entropy.
    """
    total, steps = 0.0, 0
    for features, labels in batches:
        optimizer.zero_grad(set_to_none=True)
        with backend.autocast():
            loss = functional.cross_entropy(model(features), labels)
        objective = loss if penalty is None else loss + penalty(model)
        torch.autograd.backward(objective)
        optimizer.step()
        total, steps = total + float(loss.detach()), steps + 1
    return StepStats(steps=steps, loss=total / max(1, steps))
