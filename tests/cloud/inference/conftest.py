"""Small seeded models for the inference tests: one architecture, weights per version."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
import torch

from fedstream.cloud.inference import ModelPreparer, ServedModel
from fedstream.cloud.inference.batcher import MicroBatcher
from fedstream.cloud.inference.http_api import HttpApi
from fedstream.shared.learning.model import tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol.arch import Architecture

ARCH = Architecture.mlp((8, 16, 4))
S = TypeVar("S", bound="Started")


@pytest.fixture(scope="session")
def weights() -> Callable[[int], list[torch.Tensor]]:
    """Seeded weights of the test MLP: a different model for each seed."""
    return lambda seed: tensors_of(build_model(ARCH, seed=seed))


@pytest.fixture(scope="session")
def preparer() -> ModelPreparer:
    """An fp32 preparer on this machine's default backend (IPEX where it loads)."""
    return ModelPreparer(arch=ARCH, precision="fp32")


@pytest.fixture(scope="session")
def served(preparer: ModelPreparer,
           weights: Callable[[int], list[torch.Tensor]]) -> Callable[[int], ServedModel]:
    """Version `v` of the test model, with the weights of seed `v`."""
    return lambda version: preparer.prepare(version, weights(version))


@pytest.fixture
def rows() -> Callable[[int], npt.NDArray[np.float32]]:
    """Seeded random feature rows [n, 8]; each call draws new ones."""
    rng = np.random.default_rng(7)
    return lambda n: rng.standard_normal((n, ARCH.features)).astype(np.float32)


@pytest.fixture(scope="session")
def arch() -> Architecture:
    """The test MLP (8 features in, 4 classes out)."""
    return ARCH


@pytest.fixture(scope="session")
def preparer_for() -> Callable[[Architecture], ServedModel]:
    """Version 9 of a seeded model of another architecture."""
    return lambda arch: ModelPreparer(arch=arch, precision="fp32").prepare(
        9, tensors_of(build_model(arch, seed=0)))


class Started(Protocol):
    """What `started` stops: a batcher and the API in front of it."""

    @property
    def batcher(self) -> MicroBatcher: ...

    @property
    def api(self) -> HttpApi: ...


@pytest.fixture
def started() -> Iterator[Callable[[S], S]]:
    """Registers started batcher + API pairs; stops each after the test."""
    made: list[Started] = []

    def keep(pair: S) -> S:
        made.append(pair)
        return pair

    yield keep
    for pair in made:
        pair.batcher.stop()
        pair.api.stop()

