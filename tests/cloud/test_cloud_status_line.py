"""Tests for cloud/status_line.py: the line `systemctl status` shows for the cloud."""

from __future__ import annotations

import pytest

from fedstream.cloud.status_line import cloud_status_line
from fedstream.shared.protocol.control import RoundMode, RoundState, RoundStatus, TrainParams


def _round(status: RoundStatus, *, received: int = 0, mode: RoundMode = RoundMode.SYNC,
           reason: str = "", declined: dict[str, str] | None = None) -> RoundState:
    return RoundState(round_id="r-ab12", model="m", status=status, base_version=6,
                      deadline=9.0, train=TrainParams(epochs=1, lr=0.1, momentum=0.0,
                                                      batch_size=8),
                      codec="f32", selection=("e1", "e2", "e3", "e4", "e5"), quorum=1,
                      received=received, mode=mode, reason=reason, buffer=2,
                      declined=declined or {})


@pytest.mark.parametrize(("state", "edges", "line"), [
    (None, 0, "no round yet, model v7, 0 edges online"),
    (_round(RoundStatus.COLLECTING, received=3), 2,
     "round r-ab12 collecting 3/5 updates, model v7, 2 edges online"),
    (_round(RoundStatus.OPEN, declined={"e5": "too_little_data"}), 1,
     "round r-ab12 open 0/4 updates, model v7, 1 edge online"),
    (_round(RoundStatus.PUBLISHED, received=5), 5,
     "round r-ab12 published, model v7, 5 edges online"),
    (_round(RoundStatus.FAILED, reason="no_quorum"), 5,
     "round r-ab12 failed (no_quorum), model v7, 5 edges online"),
    (_round(RoundStatus.COLLECTING, received=3, mode=RoundMode.ASYNC), 5,
     "session r-ab12 collecting, 3 updates (buffer 2), model v7, 5 edges online"),
])
def test_status_line(state: RoundState | None, edges: int, line: str) -> None:
    """Each round state reads as one short line with the model and the edges online."""
    # Execute
    got = cloud_status_line(connected=True, state=state, version=7, edges_online=edges)

    # Assert
    assert got == line


def test_broker_loss_comes_first() -> None:
    """While paho reconnects, the line says so before the rest."""
    # Execute
    got = cloud_status_line(connected=False, state=None, version=0, edges_online=0)

    # Assert
    assert got == "broker unreachable, retrying; no round yet, model v0, 0 edges online"
