"""When an edge trains (`next_step`): once per sync round on its base version, once per held
model version in an async session."""

from __future__ import annotations

import dataclasses

import pytest

from fedstream.edge_node.participation import Step, next_step
from fedstream.shared.protocol.control import RoundState, TrainParams

ROUND = RoundState(round_id="r1", model="m", status="open", base_version=1, deadline=1e12,
                   train=TrainParams(epochs=1, lr=0.1, momentum=0.0, batch_size=8),
                   codec="f32", selection=("e1", "e2"), quorum=1)
SESSION = dataclasses.replace(ROUND, round_id="s1", status="collecting", selection=("e2",),
                              mode="async", buffer=2, max_staleness=1)


@pytest.mark.parametrize(("state", "edge", "held", "trained", "expected"), [
    # sync round on v1
    (ROUND, "e1", 1, None, Step.TRAIN),
    (ROUND, "e1", None, None, Step.WAIT),
    (ROUND, "e1", 0, None, Step.WAIT),  # v1 still arriving
    (ROUND, "e1", 2, None, Step.STALE),  # holds a newer model than the round's base
    (ROUND, "e3", 1, None, Step.DROP),  # not selected
    (ROUND, "e1", 1, ("r1", 1), Step.DROP),  # already trained this round
    (ROUND, "e1", 1, ("r0", 1), Step.TRAIN),  # trained an earlier round only
    (dataclasses.replace(ROUND, status="collecting", received=1), "e1", 1, None, Step.TRAIN),
    (dataclasses.replace(ROUND, status="aggregating"), "e1", 1, None, Step.DROP),
    (dataclasses.replace(ROUND, status="published"), "e1", 1, None, Step.DROP),
    # async session on v1: any edge may join, once per held version
    (SESSION, "e1", 1, None, Step.TRAIN),
    (SESSION, "e1", 0, None, Step.WAIT),  # the session's newer model is still arriving
    (SESSION, "e1", 1, ("s1", 1), Step.WAIT),  # trained on v1 already: wait for v2
    (SESSION, "e1", 2, ("s1", 1), Step.TRAIN),  # v2 arrived
    (SESSION, "e1", 1, ("r1", 1), Step.TRAIN),  # trained v1 in another round, not here
    (dataclasses.replace(SESSION, status="published"), "e1", 2, None, Step.DROP),
])
def test_next_step(state: RoundState, edge: str, held: int | None,
                   trained: tuple[str, int] | None, expected: Step) -> None:
    """The decision table for sync rounds and async sessions."""
    # Execute
    step = next_step(state, edge_id=edge, held=held, trained=trained)

    # Assert
    assert step is expected
