"""The SGD loop both sides train with: edge rounds and cloud fine-tuning run the same steps."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fedstream.shared.learning.backends import Backend
from fedstream.shared.learning.model import load_tensors
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.tasks import task_for
from fedstream.shared.protocol.arch import Architecture, TaskKind

Batch = tuple[torch.Tensor, torch.Tensor]
Penalty = Callable[[nn.Module], torch.Tensor]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStats:
    """What a run of steps did.

    Attributes:
        steps: Optimizer steps taken.
        loss: Mean task loss over those steps, without any penalty; 0.0 when no step ran.
    """

    steps: int
    loss: float


def probe_batch(arch: Architecture, batch_size: int,
                seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded model of `arch` and one random batch for it: what backends are timed on
    (`select_backend`'s probe). Speed depends on shapes, not values, so no data is needed.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, arch.features, generator=gen)
    y = (torch.randint(arch.outputs, (batch_size,), generator=gen)
         if arch.task is TaskKind.CLASSIFICATION
         else torch.randn(batch_size, arch.outputs, generator=gen))
    return build_model(arch, seed=seed), x, y


def prepare_sgd(arch: Architecture, start: Sequence[torch.Tensor], backend: Backend, *,
                lr: float, momentum: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    """Build the model from `start` and hand it with its SGD optimizer to the backend.

    Args:
        arch: The model's architecture (family, params, shapes, task).
        start: Initial tensors in spec order; copied, never modified.
        backend: Prepares the pair (IPEX returns new objects, may pack bf16 weights).
        lr: SGD learning rate.
        momentum: SGD momentum.

    Returns:
        The model and optimizer to pass to `train_steps`, in train mode.
    """
    plain = build_model(arch)
    load_tensors(plain, start)
    plain.train()
    sgd = torch.optim.SGD(plain.parameters(), lr=lr, momentum=momentum)
    return backend.prepare_training(plain, sgd)


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, backend: Backend,
                batches: Iterable[Batch], *, arch: Architecture,
                penalty: Penalty | None = None,
                on_step: Callable[[], None] | None = None) -> StepStats:
    """One SGD step per batch: the task's loss (+ penalty), backward, optimizer step.

    Only the forward pass and its loss run inside `backend.autocast()`; the penalty is added
    outside it so a weight-space term stays in fp32 even when the forward pass is bf16.

    Args:
        model: Prepared by `backend` (see `prepare_sgd`).
        optimizer: The optimizer prepared with it.
        backend: Supplies the forward-pass autocast context.
        batches: (features, targets) pairs, consumed lazily, one step each.
        arch: Says which task's loss to use (cross-entropy, or mean squared error).
        penalty: Extra loss of the weights alone, e.g. an anchor toward earlier weights.
        on_step: Called after each step (a watchdog ping: training runs on a service loop).

    Returns:
        Steps taken and their mean task loss.
    """
    task = task_for(arch.task)
    total, steps = 0.0, 0
    for features, targets in batches:
        optimizer.zero_grad(set_to_none=True)
        with backend.autocast():
            loss = task.loss(model(features), targets)
        objective = loss if penalty is None else loss + penalty(model)
        torch.autograd.backward(objective)
        optimizer.step()
        total, steps = total + float(loss.detach()), steps + 1
        if on_step is not None:
            on_step()
    return StepStats(steps=steps, loss=total / max(1, steps))
