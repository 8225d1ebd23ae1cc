"""Tests for shared/learning/training.py: the SGD step loop edge and cloud both train with."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.learning.backends import BACKENDS, Backend
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.training import Batch, StepStats, prepare_sgd, train_steps
from fedstream.shared.protocol.arch import Architecture

ARCH = Architecture.mlp((8, 16, 2))


def _build_or_skip(name: str, precision: str) -> Backend:
    try:
        return BACKENDS.build(name, precision=precision)
    except ConfigError as err:
        if err.reason is Reason.BACKEND_UNAVAILABLE:
            pytest.skip(f"{name} unavailable: {err.detail}")
        raise


def _batches(n: int, size: int = 16) -> list[Batch]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randn(size, ARCH.features, generator=gen)
        out.append((x, (x[:, 0] > 0).long()))
    return out


def _start() -> list[torch.Tensor]:
    return tensors_of(build_model(ARCH, seed=0))


@pytest.mark.parametrize("name", BACKENDS.names())
def test_prepare_sgd_loads_start_and_leaves_it_alone(name: str) -> None:
    """The prepared model holds the start weights in train mode; the start tensors are copied."""
    # Prepare
    backend = _build_or_skip(name, "fp32")
    start = _start()
    before = [t.clone() for t in start]

    # Execute
    model, optimizer = prepare_sgd(ARCH, start, backend, lr=0.1, momentum=0.5)
    prepared = tensors_of(model)
    train_steps(model, optimizer, backend, _batches(2), arch=ARCH)

    # Assert
    assert all(torch.equal(a, b) for a, b in zip(prepared, start, strict=True))
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(start, before, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(tensors_of(model), start, strict=True))
    assert optimizer.param_groups[0]["lr"] == 0.1
    assert optimizer.param_groups[0]["momentum"] == 0.5


def test_loss_is_the_mean_over_steps_without_the_penalty() -> None:
    """With lr 0 the weights stay put, so the reported loss is the plain mean of batch losses."""
    # Prepare
    backend = BACKENDS.build("torch")
    model, optimizer = prepare_sgd(ARCH, _start(), backend, lr=0.0, momentum=0.0)
    batches = _batches(3)
    with torch.no_grad():
        expected = sum(float(functional.cross_entropy(model(x), y)) for x, y in batches) / 3

    # Execute
    stats = train_steps(model, optimizer, backend, batches, arch=ARCH,
                        penalty=lambda m: 1e6 * sum(p.square().sum() for p in m.parameters()))

    # Assert
    assert stats.steps == 3
    assert stats.loss == pytest.approx(expected, rel=1e-6)


def test_no_batches_is_no_step() -> None:
    """An empty batch stream takes no step, leaves the weights alone and reports loss 0."""
    # Prepare
    backend = BACKENDS.build("torch")
    start = _start()
    model, optimizer = prepare_sgd(ARCH, start, backend, lr=0.1, momentum=0.9)

    # Execute
    stats = train_steps(model, optimizer, backend, iter([]), arch=ARCH)

    # Assert
    assert stats == StepStats(steps=0, loss=0.0)
    assert all(torch.equal(a, b) for a, b in zip(tensors_of(model), start, strict=True))


def test_penalty_gradient_reaches_the_step() -> None:
    """A penalty on the weights' size shrinks them compared with the same steps without it."""
    # Prepare
    backend = BACKENDS.build("torch")
    runs = []

    def size(model: nn.Module) -> torch.Tensor:
        return 0.5 * torch.stack([p.square().sum() for p in model.parameters()]).sum()

    # Execute
    for penalty in (None, size):
        model, optimizer = prepare_sgd(ARCH, _start(), backend, lr=0.1, momentum=0.0)
        train_steps(model, optimizer, backend, _batches(5), penalty=penalty, arch=ARCH)
        runs.append(sum(float(t.square().sum()) for t in tensors_of(model)))

    # Assert
    assert runs[1] < 0.7 * runs[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", BACKENDS.names())
def test_steps_lower_the_loss_on_every_backend(name: str, precision: str) -> None:
    """Twenty steps through each backend and precision lower the loss on a separable problem."""
    # Prepare
    backend = _build_or_skip(name, precision)
    model, optimizer = prepare_sgd(ARCH, _start(), backend, lr=0.5, momentum=0.0)
    batches = _batches(20)

    # Execute
    first = train_steps(model, optimizer, backend, batches[:1], arch=ARCH)
    train_steps(model, optimizer, backend, batches[1:-1], arch=ARCH)
    last = train_steps(model, optimizer, backend, batches[-1:], arch=ARCH)

    # Assert
    assert last.loss < 0.7 * first.loss
