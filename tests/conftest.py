"""Shared fixtures: one real Mosquitto per test session, unique federation names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedstream.broker import BrokerParams, Mosquitto


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A real Mosquitto on a free loopback port, ready on a connect probe."""
    data_dir: Path = tmp_path_factory.mktemp("mosquitto")
    with Mosquitto(BrokerParams(port=0, data_dir=data_dir)) as running:
        yield running


@pytest.fixture
def federation() -> str:
    """A federation name no other test uses, so retained messages never leak between tests."""
    return f"t{uuid.uuid4().hex[:10]}"
