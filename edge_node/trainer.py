"""Local training: the round's base model + this edge's data -> a weight delta."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from fedstream.shared.learning.backends import Backend
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.sources import Dataset
from fedstream.shared.learning.training import Batch, StepStats, prepare_sgd, train_steps
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.control import TrainParams


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What an edge sends back: delta from the base, samples used, final mean loss."""

    delta: list[torch.Tensor]
    samples: int
    loss: float


def train_round(*, arch: Architecture, base: Sequence[torch.Tensor], data: Dataset,
                params: TrainParams, backend: Backend, seed: int,
                on_batch: Callable[[], None] | None = None) -> TrainResult:
    """Train a copy of the base model on `data` and return the weight change.

    Args:
        arch: The model's architecture, from the manifest.
        base: The round's base model tensors (spec order); never modified.
        data: The edge's private data (labels or targets, as the model's task needs).
        params: Epochs, learning rate, momentum and batch size from the round.
        backend: IPEX or stock torch, fp32 or bf16.
        seed: Seeds the minibatch order so a round is reproducible.
        on_batch: Called before each minibatch, on this thread: a long round runs on the
            daemon's loop, which pets systemd's watchdog from here (it must stay cheap).

    Raises:
        ConfigError: BAD_CONFIG when the data does not fit the architecture.
    """
    data.check_fits(arch)
    model, optimizer = prepare_sgd(arch, base, backend, lr=params.lr,
                                   momentum=params.momentum)
    features, labels = torch.tensor(data.features), torch.tensor(data.y)
    gen = torch.Generator().manual_seed(seed)
    last_epoch = StepStats(steps=0, loss=0.0)
    for _ in range(params.epochs):
        order = torch.randperm(len(labels), generator=gen)
        last_epoch = train_steps(model, optimizer, backend,
                                 _minibatches(features, labels, order, params.batch_size,
                                              on_batch),
                                 arch=arch)
    # state_dict() gives fp32 master weights even when IPEX trains in bf16.
    trained = tensors_of(model)
    delta = [t - b for t, b in zip(trained, base, strict=True)]
    return TrainResult(delta=delta, samples=len(labels), loss=last_epoch.loss)


def _minibatches(features: torch.Tensor, labels: torch.Tensor, order: torch.Tensor,
                 size: int, on_batch: Callable[[], None] | None) -> Iterator[Batch]:
    for start in range(0, len(order), size):
        if on_batch is not None:
            on_batch()
        idx = order[start:start + size]
        yield features[idx], labels[idx]
