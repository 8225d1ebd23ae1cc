"""`mlp`: fully connected layers with ReLU between them, over the flat feature row."""

from __future__ import annotations

import itertools
import math

from torch import nn

from fedstream.shared.learning.models.base import MODELS


@MODELS.add("mlp", "fully connected layers with ReLU between them")
def mlp(*, input_shape: tuple[int, ...], outputs: int,
        hidden: tuple[int, ...] = (100, 100)) -> nn.Module:
    """`features -> hidden... -> outputs`, a ReLU after every layer but the last.

    Args:
        input_shape: Any shape; the MLP reads its flat row.
        outputs: Classes or predicted values.
        hidden: Sizes of the hidden layers (none for a linear model).
    """
    sizes = [math.prod(input_shape), *hidden, outputs]
    if any(type(n) is not int or n <= 0 for n in sizes):
        raise ValueError(f"hidden sizes must be positive ints, got {list(hidden)}")
    mods: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        mods.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)
