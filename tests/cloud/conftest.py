"""Fixtures for the cloud's unit tests."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet

import pytest

from fedstream.cloud.intake import Intake, Update
from fedstream.shared.protocol.control import RoundState
from fedstream.shared.protocol.messages import UpdateChunk

Take = Callable[..., Update | None]


def _take(intake: Intake, payload: bytes, *, topic_edge: str, state: RoundState | None,
          counted: AbstractSet[tuple[str, int]], now: float) -> Update | None:
    """What the receiver does with one frame, without its journal: collect, then verify."""
    chunk = intake.parse(payload, topic_edge=topic_edge)
    assert isinstance(chunk, UpdateChunk)
    done = intake.collect(chunk, state=state, counted=counted, now=now)
    return None if done is None else intake.verify(chunk.meta, done, state=state,
                                                    counted=counted)


@pytest.fixture(scope="session")
def take() -> Take:
    """Feeds one frame to an `Intake` as the receiver does, minus the journal."""
    return _take
