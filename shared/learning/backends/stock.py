"""Stock PyTorch on CPU: the backend that works everywhere torch does."""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar

import structlog
import torch

from fedstream.shared.learning.backends.base import (
    BACKENDS,
    Precision,
    autocast_for,
    check_precision,
)
from fedstream.shared.learning.cpu import detect_cpu

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class StockBackend:
    """Plain torch; bf16 comes only from autocast, weights stay fp32.

    Attributes:
        precision: "fp32" or "bf16".
    """

    name: ClassVar[str] = "torch"
    precision: Precision = "fp32"

    def prepare_training(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Put the model in train mode; stock torch needs nothing else."""
        return model.train(), optimizer

    def prepare_inference(self, model: torch.nn.Module) -> torch.nn.Module:
        """Return an eval-mode copy without grads.

        A copy, because turning grads off on the caller's model would silently stop the
        next training round from learning.
        """
        return copy.deepcopy(model).eval().requires_grad_(False)

    def autocast(self) -> AbstractContextManager[object]:
        """bf16 autocast for "bf16", a no-op for "fp32"."""
        return autocast_for(self.precision)


@BACKENDS.add("torch", "stock PyTorch on CPU; bf16 through autocast")
def build_stock(*, precision: str = "fp32") -> StockBackend:
    """Build the stock backend.

    Args:
        precision: "fp32" or "bf16". bf16 on a CPU without native bf16 is allowed, because it
            still computes correctly, but torch emulates it and it is usually slower than fp32.

    Raises:
        ConfigError: BAD_CONFIG for an unknown precision.
    """
    checked = check_precision(precision)
    cpu = detect_cpu()
    if checked == "bf16" and not cpu.has_bf16:
        log.warning(
            "slow_precision_selected",
            backend="torch",
            precision=checked,
            cpu=cpu.model_name,
            reason="cpu has neither avx512_bf16 nor amx_bf16; bf16 is emulated",
        )
    return StockBackend(precision=checked)
