"""Fixtures for the CLI's tests: fixed replies of a cloud, as the tables and documents get
them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fedstream.shared.protocol.commands import ModelListReply, StatusReply
from fedstream.shared.protocol.control import (
    EdgeStatus,
    ModelInfo,
    RoundMode,
    RoundState,
    RoundStatus,
    TrainParams,
    VersionStatus,
)

_TRAIN = TrainParams(epochs=1, lr=0.1, momentum=0.0, batch_size=8)
_EDGES3 = ("edge-0", "edge-1", "edge-2")
PUBLISHED = RoundState(round_id="r1", model="m", status=RoundStatus.PUBLISHED, base_version=1,
                       deadline=160.0, opened=100.0, train=_TRAIN, codec="f32",
                       selection=_EDGES3, quorum=1, received=3,
                       result={"version": 2, "accuracy": 0.9415, "updates": 3, "seconds": 4.2})
FAILED = RoundState(round_id="r2", model="m", status=RoundStatus.FAILED, base_version=2,
                    deadline=260.0, opened=200.0, train=_TRAIN, codec="int8",
                    selection=_EDGES3, quorum=2, received=1, reason="no_quorum",
                    result={"detail": "1 of 2 updates"}, declined={"edge-2": "too_little_data"})
OPEN = RoundState(round_id="r3", model="m", status=RoundStatus.COLLECTING, base_version=2,
                  deadline=341.0, opened=300.0, train=_TRAIN, codec="f32",
                  selection=_EDGES3[:2], quorum=1, received=1)
SESSION = RoundState(round_id="s4", model="m", status=RoundStatus.COLLECTING, base_version=5,
                     deadline=400.0, opened=300.0, train=_TRAIN, codec="f32",
                     selection=_EDGES3, quorum=1, received=7, mode=RoundMode.ASYNC, buffer=3,
                     result={"versions": 2, "version": 5})
EDGES = (
    EdgeStatus(edge_id="edge-1", online=True, version=2, samples=600,
               backend={"backend": "torch", "precision": "fp32"}, last_round="r1"),
    EdgeStatus(edge_id="edge-0", online=True, version=2, samples=598,
               backend={"backend": "ipex", "precision": "bf16"}, last_round="r1",
               data={"source": "sensors", "readings": 1200, "spans": 5, "windows_trained": 118,
                     "dropped.malformed": 3}),
    EdgeStatus(edge_id="edge-2", online=False, version=1, samples=12, last_round="r1",
               declined="r2", decline_reason="too_little_data"),
)
STATUS = StatusReply(round=OPEN, edges=EDGES, model_version=2,
                     model_metrics={"accuracy": 0.9415}, rejections={"bad_hash": 2},
                     serving={"version": 2, "backend": "torch", "precision": "fp32",
                              "http_port": 8080, "served": 12, "rejected": 0})
MODELS = ModelListReply(model_version=3, versions=(
    ModelInfo(version=0, parent=None, round_id="", lineage={"metrics.accuracy": 0.1}),
    ModelInfo(version=1, parent=0, round_id="r1",
              lineage={"metrics.accuracy": 0.9, "strategy": "fedavg", "codec": "f32",
                       "metrics.forgetting": 0.0}),
    ModelInfo(version=2, parent=1, round_id="r2",
              lineage={"metrics.accuracy": 0.5, "strategy": "fedavg", "codec": "int8"},
              status=VersionStatus.REJECTED, reason="regressed_past"),
    ModelInfo(version=3, parent=1, round_id="", lineage={"metrics.accuracy": 0.9,
                                                         "rollback_of": 1}),
))


@dataclass(frozen=True, slots=True)
class Replies:
    """A small fleet: rounds in four states, three edges, four model versions."""

    published: RoundState = PUBLISHED
    failed: RoundState = FAILED
    open: RoundState = OPEN
    session: RoundState = SESSION
    edges: tuple[EdgeStatus, ...] = EDGES
    status: StatusReply = STATUS
    models: ModelListReply = MODELS


@pytest.fixture(scope="session")
def replies() -> Replies:
    """Fixed replies: r1 published v2, r2 failed no_quorum, r3 collecting, session s4; edge-0
    a sensor edge, edge-2 offline having declined r2; v2 rejected, v3 a served rollback."""
    return Replies()
