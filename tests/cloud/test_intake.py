"""Update intake: chunks to verified updates of the open round, within memory bounds (P7)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fedstream.cloud.config import IntakeConfig
from fedstream.cloud.intake import Intake, Update
from fedstream.cloud.rounds import open_round
from fedstream.shared.errors import ProtocolError, Reason
from fedstream.shared.learning.model import spec_of, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.control import RoundState, TrainParams
from fedstream.shared.protocol.messages import UpdateChunk, UpdateMeta

ARCH = Architecture.mlp((64, 32, 10))
SPEC = spec_of(build_model(ARCH))
BLOB_BYTES = 4 * sum(t.numel for t in SPEC)

# The `take` fixture (tests/cloud/conftest.py): one frame in, as the receiver does.
Take = Callable[..., Update | None]




def _round(edges: tuple[str, ...] = ("e1", "e2")) -> RoundState:
    return open_round(round_id="r1", model="m", base_version=0, now=0.0, deadline_s=60,
                      train=TrainParams(epochs=1, lr=0.1, momentum=0.0, batch_size=8),
                      codec="f32", codec_params={}, selection=edges, quorum=1)


def _frames(edge: str, *, round_id: str = "r1", seed: int = 0) -> list[bytes]:
    delta = tensors_of(build_model(ARCH, seed=seed))
    enc = encode_blob(delta, SPEC, codec="f32", chunk_size=4096)
    meta = UpdateMeta(edge_id=edge, round_id=round_id, base_version=0, samples=10, loss=0.5)
    return [wire.pack(UpdateChunk(header=enc.header, meta=meta, index=i, data=bytes(v)))
            for i, v in enumerate(enc.chunks)]


def _intake(**bounds: int) -> Intake:
    params = {"max_update_bytes": 1 << 20, "max_sender_bytes": 1 << 20,
              "max_total_bytes": 1 << 22, **bounds}
    return Intake(spec=SPEC, params=IntakeConfig(**params))


def test_complete_update_is_handed_on_once(take: Take) -> None:
    """All chunks (reversed, one duplicated before completion) give one update equal to what
    was sent, and nothing is held after it."""
    # Prepare
    intake, state = _intake(), _round()
    frames = _frames("e1")
    expected = tensors_of(build_model(ARCH, seed=0))

    # Execute
    out = [take(intake, f, topic_edge="e1", state=state, counted=set(), now=0.0)
           for f in [frames[-1], *reversed(frames)]]

    # Assert
    done = [u for u in out if u is not None]
    assert len(done) == 1
    assert all(torch.equal(a, b) for a, b in zip(done[0].delta, expected, strict=True))
    assert intake.held_bytes == 0


@pytest.mark.parametrize(("edge", "round_id", "reason"), [
    ("e3", "r1", Reason.UNKNOWN_EDGE),
    ("e1", "r0", Reason.STALE_ROUND),
])
def test_updates_outside_the_round_are_refused_before_buffering(
    take: Take, edge: str, round_id: str, reason: Reason
) -> None:
    """An unselected edge or an old round id is refused on the first chunk, holding nothing."""
    # Prepare
    intake, state = _intake(), _round()
    frame = _frames(edge, round_id=round_id)[0]

    # Execute
    with pytest.raises(ProtocolError) as caught:
        take(intake, frame, topic_edge=edge, state=state, counted=set(), now=0.0)

    # Assert
    assert caught.value.reason is reason
    assert intake.held_bytes == 0


def test_frame_naming_another_edge_than_its_topic_is_bad_frame(take: Take) -> None:
    """An edge cannot publish on another edge's topic."""
    # Prepare
    intake = _intake()

    # Execute
    with pytest.raises(ProtocolError) as caught:
        take(intake, _frames("e1")[0], topic_edge="e2", state=_round(), counted=set(), now=0.0)

    # Assert
    assert caught.value.reason is Reason.BAD_FRAME


def test_sender_and_total_bounds_refuse_new_blobs(take: Take) -> None:
    """A second blob from one sender beyond its bound, or from anyone beyond the total, is
    oversized; the first partial keeps its memory until it expires."""
    # Prepare
    intake = _intake(max_sender_bytes=BLOB_BYTES + 10, max_total_bytes=2 * BLOB_BYTES + 10)
    state = _round(("e1", "e2", "e3"))
    take(intake, _frames("e1", seed=1)[0], topic_edge="e1", state=state, counted=set(), now=0.0)
    take(intake, _frames("e2", seed=2)[0], topic_edge="e2", state=state, counted=set(), now=0.0)

    # Execute
    reasons = []
    for edge, seed in (("e1", 3), ("e3", 4)):
        with pytest.raises(ProtocolError) as caught:
            take(intake, _frames(edge, seed=seed)[0], topic_edge=edge, state=state,
                        counted=set(), now=0.0)
        reasons.append(caught.value.reason)
    held = intake.held_bytes
    dropped = intake.expire(now=1e6)

    # Assert
    assert reasons == [Reason.OVERSIZED, Reason.OVERSIZED]
    assert held == 2 * BLOB_BYTES
    assert len(dropped) == 2 and intake.held_bytes == 0
