"""`gru`: a small recurrent net reading a `[channels, steps]` window step by step."""

from __future__ import annotations

import torch
from torch import nn

from fedstream.shared.learning.models.base import MODELS, Rows


class Gru(nn.Module):
    """Rows -> `steps` vectors of `channels` features -> GRU -> last hidden state -> Linear.

    Args:
        input_shape: `(channels, steps)`.
        outputs: Classes or predicted values.
        hidden: Size of the hidden state.
        layers: Stacked GRU layers.

    Raises:
        ValueError: `input_shape` is not `(channels, steps)` or a parameter is out of range.
    """

    def __init__(self, *, input_shape: tuple[int, ...], outputs: int, hidden: int,
                 layers: int) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"gru reads input_shape (channels, steps), got {input_shape!r}")
        for name, value in (("hidden", hidden), ("layers", layers)):
            if type(value) is not int or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.rows = Rows(input_shape)
        self.gru = nn.GRU(input_shape[0], hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, channels * steps] -> [N, outputs]`."""
        # [N, channels, steps] -> [N, steps, channels]: one feature vector per time step.
        _, last = self.gru(self.rows(x).transpose(1, 2))
        out: torch.Tensor = self.head(last[-1])
        return out


@MODELS.add("gru", "a GRU over the time steps; its last hidden state predicts")
def gru(*, input_shape: tuple[int, ...], outputs: int, hidden: int = 64,
        layers: int = 1) -> nn.Module:
    """Build a `Gru` (see its arguments)."""
    return Gru(input_shape=input_shape, outputs=outputs, hidden=hidden, layers=layers)
