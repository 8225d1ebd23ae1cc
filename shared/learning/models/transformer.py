"""`transformer`: a small encoder over the time steps of a `[channels, steps]` window."""

from __future__ import annotations

import torch
from torch import nn

from fedstream.shared.learning.models.base import MODELS, Rows


class Transformer(nn.Module):
    """Per-step embedding + learned positions -> encoder -> mean over time -> Linear.

    Args:
        input_shape: `(channels, steps)`.
        outputs: Classes or predicted values.
        dim: Width of each step's embedding; a multiple of `heads`.
        heads: Attention heads per layer.
        layers: Encoder layers.
        ff: Width of each layer's feed-forward block.
        dropout: Dropout inside the encoder; 0.0 keeps training steps deterministic.

    Raises:
        ValueError: `input_shape` is not `(channels, steps)` or a parameter is out of range.
    """

    def __init__(self, *, input_shape: tuple[int, ...], outputs: int, dim: int, heads: int,
                 layers: int, ff: int, dropout: float) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(
                f"transformer reads input_shape (channels, steps), got {input_shape!r}")
        for name, value in (("dim", dim), ("heads", heads), ("layers", layers), ("ff", ff)):
            if type(value) is not int or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if type(dropout) not in (int, float) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        channels, steps = input_shape
        self.rows = Rows(input_shape)
        self.embed = nn.Linear(channels, dim)
        self.position = nn.Parameter(torch.randn(steps, dim) * 0.02)
        # `torch.relu` rather than the default `F.relu`: the same function, but torch then
        # skips the fused inference kernel, which cannot read the blocked weights IPEX bf16
        # packs into `linear1`/`linear2` ("2d weights expected"). Training never takes that
        # path, and eval now computes exactly what training does.
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=ff,
                                           dropout=float(dropout), activation=torch.relu,
                                           batch_first=True)
        # Nested tensors only pay off with padding masks, which never reach it; left on, torch
        # would warn on every build that these layers cannot use them.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, channels * steps] -> [N, outputs]`."""
        steps = self.embed(self.rows(x).transpose(1, 2)) + self.position
        out: torch.Tensor = self.head(self.encoder(steps).mean(dim=1))
        return out


@MODELS.add("transformer", "a transformer encoder over the time steps, averaged over time")
def transformer(*, input_shape: tuple[int, ...], outputs: int, dim: int = 32, heads: int = 4,
                layers: int = 2, ff: int = 64, dropout: float = 0.0) -> nn.Module:
    """Build a `Transformer` (see its arguments)."""
    return Transformer(input_shape=input_shape, outputs=outputs, dim=dim, heads=heads,
                       layers=layers, ff=ff, dropout=dropout)
