"""Local training: the round's base model + this edge's data -> a weight delta."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fedstream.shared.backends import Backend
from fedstream.shared.control import TrainParams
from fedstream.shared.model import build_mlp, load_tensors, tensors_of
from fedstream.shared.sources import Dataset


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What an edge sends back: delta from the base, samples used, final mean loss."""

    delta: list[torch.Tensor]
    samples: int
    loss: float


def train_round(*, layers: Sequence[int], base: Sequence[torch.Tensor], data: Dataset,
                params: TrainParams, backend: Backend, seed: int) -> TrainResult:
    """Train a copy of the base model on `data` and return the weight change.

    Args:
        layers: MLP layer sizes from the manifest.
        base: The round's base model tensors (spec order); never modified.
        data: The edge's private labelled data.
        params: Epochs, learning rate, momentum and batch size from the round.
        backend: IPEX or stock torch, fp32 or bf16.
        seed: Seeds the minibatch order so a round is reproducible.
    """
    if data.features.shape[1] != layers[0] or data.num_classes > layers[-1]:
        raise ValueError(f"data has {data.features.shape[1]} features, {data.num_classes} "
                         f"classes; model layers are {list(layers)}")
    plain = build_mlp(layers)
    load_tensors(plain, [t.clone() for t in base])
    plain.train()
    sgd = torch.optim.SGD(plain.parameters(), lr=params.lr, momentum=params.momentum)
    model, optimizer = backend.prepare_training(plain, sgd)
    features, labels = torch.tensor(data.features), torch.tensor(data.labels)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    last_epoch_loss = 0.0
    for _ in range(params.epochs):
        order = torch.randperm(len(labels), generator=gen)
        total, batches = 0.0, 0
        for start in range(0, len(order), params.batch_size):
            idx = order[start:start + params.batch_size]
            optimizer.zero_grad(set_to_none=True)
            with backend.autocast():
                loss = loss_fn(model(features[idx]), labels[idx])
            loss.backward()
            optimizer.step()
            total, batches = total + float(loss.detach()), batches + 1
        last_epoch_loss = total / max(1, batches)
    # state_dict() gives fp32 master weights even when IPEX trains in bf16.
    trained = tensors_of(model)
    delta = [t - b for t, b in zip(trained, base, strict=True)]
    return TrainResult(delta=delta, samples=len(labels), loss=last_epoch_loss)
