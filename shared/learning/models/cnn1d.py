"""`cnn1d`: a temporal convolution net over `[channels, steps]` sensor windows."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from fedstream.shared.learning.models.base import MODELS, Rows


class Cnn1d(nn.Module):
    """Rows -> (Conv1d + ReLU)... keeping the length -> mean over time -> Linear.

    Args:
        input_shape: `(channels, steps)`.
        outputs: Classes or predicted values.
        channels: Output channels of each convolution layer.
        kernel: Odd kernel width, so symmetric padding keeps the number of steps.
        dilation: Layer `i` dilates by `dilation**i` (2 gives a TCN's 1, 2, 4, ...).

    Raises:
        ValueError: `input_shape` is not `(channels, steps)` or a parameter is out of range.
    """

    def __init__(self, *, input_shape: tuple[int, ...], outputs: int,
                 channels: tuple[int, ...], kernel: int, dilation: int) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"cnn1d reads input_shape (channels, steps), got {input_shape!r}")
        if not channels or any(type(n) is not int or n <= 0 for n in channels):
            raise ValueError(f"channels must be one or more positive ints, got {list(channels)}")
        if type(kernel) is not int or kernel <= 0 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd int, got {kernel!r}")
        if type(dilation) is not int or dilation <= 0:
            raise ValueError(f"dilation must be a positive int, got {dilation!r}")
        self.rows = Rows(input_shape)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise((input_shape[0], *channels))):
            gap = dilation**i
            layers += [nn.Conv1d(n_in, n_out, kernel, padding=gap * (kernel - 1) // 2,
                                 dilation=gap), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1], outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, channels * steps] -> [N, outputs]`."""
        out: torch.Tensor = self.head(self.convs(self.rows(x)).mean(dim=2))
        return out


@MODELS.add("cnn1d", "temporal convolutions over [channels x steps], averaged over time")
def cnn1d(*, input_shape: tuple[int, ...], outputs: int, channels: tuple[int, ...] = (32, 32),
          kernel: int = 5, dilation: int = 1) -> nn.Module:
    """Build a `Cnn1d` (see its arguments); the defaults suit windows of tens of steps."""
    return Cnn1d(input_shape=input_shape, outputs=outputs, channels=tuple(channels),
                 kernel=kernel, dilation=dilation)
