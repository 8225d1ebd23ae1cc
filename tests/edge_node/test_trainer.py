"""Local training through every available backend on the digits data."""

from __future__ import annotations

import pytest
import torch

from fedstream.edge_node.trainer import train_round
from fedstream.shared.errors import ConfigError
from fedstream.shared.learning.backends import BACKENDS, ipex_status
from fedstream.shared.learning.model import load_tensors, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.learning.sources import SOURCES
from fedstream.shared.learning.tasks import Classification, evaluate
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.control import TrainParams

ARCH = Architecture.mlp((64, 32, 10))
ACCURACY_TASK = Classification()
NAMES = ["torch", pytest.param("ipex", marks=pytest.mark.skipif(
    not ipex_status()[0], reason=ipex_status()[1]))]


@pytest.mark.parametrize("name", NAMES)
def test_round_improves_the_base_model_and_leaves_it_untouched(name: str) -> None:
    """Training one round from the base makes base + delta more accurate; the base is unchanged."""
    # Prepare
    data = SOURCES.build("digits", partitions=3, partition=0).load()
    test = SOURCES.build("digits", split="test").load()
    base = tensors_of(build_model(ARCH, seed=0))
    before = [t.clone() for t in base]
    params = TrainParams(epochs=3, lr=0.05, momentum=0.9, batch_size=32)

    # Execute
    result = train_round(arch=ARCH, base=base, data=data, params=params,
                         backend=BACKENDS.build(name), seed=1)

    # Assert
    assert all(torch.equal(a, b) for a, b in zip(base, before, strict=True))
    assert result.samples == len(data)
    assert [d.shape for d in result.delta] == [b.shape for b in base]
    model = build_model(ARCH)
    xs, ys = torch.tensor(test.features), torch.tensor(test.labels)
    load_tensors(model, base)
    acc_before = evaluate(model, ACCURACY_TASK, xs, ys)["accuracy"]
    load_tensors(model, [b + d for b, d in zip(base, result.delta, strict=True)])
    assert evaluate(model, ACCURACY_TASK, xs, ys)["accuracy"] > acc_before + 0.2


def test_same_seed_gives_the_same_update() -> None:
    """A round is reproducible: the same base, data and seed give a bit-identical delta."""
    # Prepare
    data = SOURCES.build("digits", partitions=3, partition=1).load()
    base = tensors_of(build_model(ARCH, seed=0))
    params = TrainParams(epochs=1, lr=0.05, momentum=0.9, batch_size=16)

    # Execute
    runs = [train_round(arch=ARCH, base=base, data=data, params=params,
                        backend=BACKENDS.build("torch"), seed=7) for _ in range(2)]

    # Assert
    assert all(torch.equal(a, b) for a, b in zip(runs[0].delta, runs[1].delta, strict=True))


def test_data_that_does_not_fit_the_model_is_refused() -> None:
    """Features of the wrong width are a clear error, not a shape crash mid-training."""
    # Prepare
    data = SOURCES.build("digits").load()
    small = Architecture.mlp((10, 10))
    base = tensors_of(build_model(small, seed=0))

    # Execute / Assert
    with pytest.raises(ConfigError, match="64 features"):
        train_round(arch=small, base=base, data=data,
                    params=TrainParams(epochs=1, lr=0.1, momentum=0.0, batch_size=8),
                    backend=BACKENDS.build("torch"), seed=0)


def test_on_batch_is_called_before_every_minibatch() -> None:
    """The hook the daemon pets systemd's watchdog from runs once per minibatch of every
    epoch (100 samples in batches of 32: 4 per epoch)."""
    # Prepare
    data = SOURCES.build("digits", partitions=3, partition=0).load()
    data = data.take(slice(0, 100))
    calls: list[None] = []
    params = TrainParams(epochs=2, lr=0.05, momentum=0.9, batch_size=32)

    # Execute
    train_round(arch=ARCH, base=tensors_of(build_model(ARCH, seed=0)), data=data,
                params=params, backend=BACKENDS.build("torch"), seed=1,
                on_batch=lambda: calls.append(None))

    # Assert
    assert len(calls) == 8
