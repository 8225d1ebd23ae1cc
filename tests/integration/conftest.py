"""Fixtures of the end-to-end tests: the edge processes they spawn share one measured-backend
cache, so the suite measures the digits MLP's backends once, not in every test (what a fleet
of identical gateways does with `backend.cache`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def backend_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `backend-choice.json` for every edge process of the session."""
    return tmp_path_factory.mktemp("backend") / "backend-choice.json"


@pytest.fixture(scope="module", autouse=True)
def shared_backend_cache(backend_cache: Path) -> Iterator[None]:
    """Spawned edges read and write `backend_cache` (`FEDSTREAM_BACKEND__CACHE`)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FEDSTREAM_BACKEND__CACHE", str(backend_cache))
        yield
