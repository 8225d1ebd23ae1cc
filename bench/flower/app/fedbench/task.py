"""The model, data and training steps both apps use (the same as fedstream's side).

The MLP is rebuilt from whatever arrays it is given (`0.weight, 0.bias, 2.weight, ...`, weights
[out, in]), so any hidden sizes work. torch runs on one thread in every process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)

StateDict = dict[str, torch.Tensor]


def number(value: object) -> float:
    """A record value that must be a number (flwr types record values as wide unions)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def load_xy(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (float32 [n, 64]) and labels (int64 [n]) of an `.npz` with `x` and `y`."""
    with np.load(path) as data:
        return torch.from_numpy(data["x"]), torch.from_numpy(data["y"])


def load_state(path: Path) -> StateDict:
    """The arrays of an `.npz` model file as a torch state_dict."""
    with np.load(path) as data:
        return {name: torch.from_numpy(data[name]) for name in data.files}


def build_mlp(state: StateDict) -> nn.Sequential:
    """`Sequential(Linear, ReLU, ..., Linear)` shaped by `state`'s weights, loaded with it."""
    indices = sorted(int(name.split(".")[0]) for name in state if name.endswith(".weight"))
    layers: list[nn.Module] = []
    for index in indices:
        if layers:
            layers.append(nn.ReLU())
        out_features, in_features = state[f"{index}.weight"].shape
        layers.append(nn.Linear(in_features, out_features))
    model = nn.Sequential(*layers)
    model.load_state_dict(state)
    return model


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lr: float,
                momentum: float, batch_size: int, seed: int) -> None:
    """One epoch of SGD with a fresh optimizer, minibatches in a `seed`-shuffled order."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    model.train()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        optimizer.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        optimizer.step()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The share of rows whose argmax output is the label."""
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())
