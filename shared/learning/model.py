"""The model both sides train: an MLP described by its layer sizes, and tensor helpers."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from fedstream.shared.protocol.messages import Spec, TensorSpec


def build_mlp(layers: Sequence[int], *, seed: int | None = None) -> nn.Sequential:
    """An MLP `layers[0] -> ... -> layers[-1]` with ReLU between linear layers.

    Args:
        layers: Sizes from input features to classes, e.g. (64, 100, 100, 10).
        seed: Seeds the initial weights when given, so every process builds the same model.
    """
    if len(layers) < 2 or any(n <= 0 for n in layers):
        raise ValueError(f"layers must be >= 2 positive sizes, got {list(layers)}")
    gen_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        mods: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(layers)):
            mods.append(nn.Linear(n_in, n_out))
            if i < len(layers) - 2:
                mods.append(nn.ReLU())
        return nn.Sequential(*mods)
    finally:
        torch.random.set_rng_state(gen_state)


def spec_of(model: nn.Module) -> Spec:
    """Tensor spec of a model's state, in state-dict order."""
    return tuple(TensorSpec(name=k, shape=tuple(v.shape)) for k, v in model.state_dict().items())


def tensors_of(model: nn.Module) -> list[torch.Tensor]:
    """Detached float32 copies of a model's state, in spec order."""
    return [v.detach().to(torch.float32).clone() for v in model.state_dict().values()]


def load_tensors(model: nn.Module, tensors: Sequence[torch.Tensor]) -> None:
    """Copy `tensors` (spec order) into `model`."""
    names = list(model.state_dict())
    if len(names) != len(tensors):
        raise ValueError(f"model has {len(names)} tensors, got {len(tensors)}")
    model.load_state_dict(OrderedDict(zip(names, tensors, strict=True)))


def num_parameters(spec: Spec) -> int:
    """Total elements in a spec."""
    return sum(t.numel for t in spec)


@torch.no_grad()
def accuracy(model: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of `model` on a labelled set."""
    if len(labels) == 0:
        raise ValueError("accuracy needs at least one sample")
    model.eval()
    predicted = model(features).argmax(dim=1)
    return float((predicted == labels).float().mean())
