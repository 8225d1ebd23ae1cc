"""The training-backend contract and its name table."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Literal, Protocol, get_args

import torch

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.registry import Registry

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


class Backend(Protocol):
    """Prepares a model and optimizer for CPU training or inference.

    The trainer calls `prepare_training` once, then runs each forward pass and loss inside
    `autocast()`; backward and the optimizer step stay outside it.
    """

    @property
    def name(self) -> str:
        """Registry name ("torch", "ipex")."""
        ...

    @property
    def precision(self) -> str:
        """Compute precision, one of `PRECISIONS`."""
        ...

    def prepare_training(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Return the model and optimizer to train with (they may be new objects)."""
        ...

    def prepare_inference(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return a model in eval mode without grads; run it inside `autocast()`."""
        ...

    def autocast(self) -> AbstractContextManager[object]:
        """Context for forward passes: bf16 autocast, or nothing for fp32."""
        ...


BACKENDS = Registry[Backend]("backend")


def check_precision(precision: str) -> Precision:
    """Validate a precision name from config.

    Raises:
        ConfigError: BAD_CONFIG when `precision` is not one of `PRECISIONS`.
    """
    for known in PRECISIONS:
        if precision == known:
            return known
    raise ConfigError(
        Reason.BAD_CONFIG, f"precision {precision!r} is not one of {', '.join(PRECISIONS)}"
    )


def autocast_for(precision: Precision) -> AbstractContextManager[object]:
    """The forward-pass context shared by every backend for `precision`."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
