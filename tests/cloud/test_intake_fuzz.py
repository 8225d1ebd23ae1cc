"""Fuzzing the update intake (P7, P10): random and mutated frames never crash it, never break
its memory bound, and whatever it hands on is exactly what an edge sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedstream.cloud.config import IntakeConfig
from fedstream.cloud.intake import Intake, Update
from fedstream.cloud.rounds import open_round
from fedstream.shared.errors import ProtocolError
from fedstream.shared.learning.model import spec_of, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.codecs import CODECS
from fedstream.shared.protocol.control import TrainParams
from fedstream.shared.protocol.messages import UpdateChunk, UpdateMeta

pytestmark = pytest.mark.fuzz

ARCH = Architecture.mlp((8, 6, 3))
SPEC = spec_of(build_model(ARCH))
EDGES = ("e1", "e2")
MAX_TOTAL = 4096
STATE = open_round(round_id="r1", model="m", base_version=0, now=0.0, deadline_s=60,
                   train=TrainParams(epochs=1, lr=0.1, momentum=0.0, batch_size=8),
                   codec="f32", codec_params={}, selection=EDGES, quorum=1)

# The `take` fixture (tests/cloud/conftest.py): one frame in, as the receiver does.
Take = Callable[..., Update | None]





def _sent() -> tuple[list[tuple[str, bytes]], dict[bytes, list[torch.Tensor]]]:
    """Legit frames of one update per edge per codec, and the tensors each blob decodes to."""
    frames: list[tuple[str, bytes]] = []
    by_hash: dict[bytes, list[torch.Tensor]] = {}
    for n, (edge, codec) in enumerate((e, c) for e in EDGES for c in CODECS.names()):
        delta = tensors_of(build_model(ARCH, seed=n))
        enc = encode_blob(delta, SPEC, codec=codec, chunk_size=64)
        by_hash[enc.header.sha256] = CODECS.build(codec).decode(
            b"".join(bytes(v) for v in enc.chunks), SPEC)
        meta = UpdateMeta(edge_id=edge, round_id="r1", base_version=0, samples=5, loss=0.5)
        frames += [(edge, wire.pack(UpdateChunk(header=enc.header, meta=meta, index=i,
                                                data=bytes(v))))
                   for i, v in enumerate(enc.chunks)]
    return frames, by_hash


FRAMES, BY_HASH = _sent()
KEYS = ["v", "k", "blob", "size", "sha", "n", "cs", "codec", "spec", "i", "data", "edge",
        "round", "base", "ns", "loss"]
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                      st.floats(allow_nan=True), st.text(max_size=8), st.binary(max_size=64),
                      st.lists(st.integers(-3, 3), max_size=3))


def _mutate(frame: bytes, op: tuple[Any, ...]) -> bytes:
    kind = op[0]
    if kind == "flip":
        pos = op[1] % len(frame)
        return frame[:pos] + bytes([frame[pos] ^ (1 << op[2])]) + frame[pos + 1:]
    if kind == "truncate":
        return frame[: op[1] % len(frame)]
    d = msgpack.unpackb(frame, raw=False)
    if kind == "swap":
        d[op[1]], d[op[2]] = d[op[2]], d[op[1]]
    elif kind == "set":
        d[op[1]] = op[2]
    elif kind == "drop":
        d.pop(op[1], None)
    elif kind == "huge":  # a consistent header declaring a blob of 2^39 bytes
        d.update(size=1 << 39, n=1024, cs=1 << 30)
    return msgpack.packb(d, use_bin_type=True)


OPS = st.one_of(
    st.tuples(st.just("deliver")),
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000)),
    st.tuples(st.just("swap"), st.sampled_from(KEYS), st.sampled_from(KEYS)),
    st.tuples(st.just("set"), st.sampled_from(KEYS), ANY_VALUE),
    st.tuples(st.just("drop"), st.sampled_from(KEYS)),
    st.tuples(st.just("huge")),
)
STEP = st.one_of(
    st.tuples(st.integers(0, len(FRAMES) - 1), OPS),
    st.tuples(st.just(-1), st.tuples(st.just("garbage"), st.binary(max_size=300))),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(steps=st.lists(STEP, min_size=1, max_size=60))
def test_no_input_crashes_breaks_bounds_or_corrupts(take: Take,
                                                    steps: list[tuple[int, Any]]) -> None:
    """Any sequence of legit, mutated and garbage frames: only ProtocolError escapes, held
    memory stays within the total bound, and every handed-on update decodes to exactly the
    tensors that were sent under its hash."""
    # Prepare
    intake = Intake(spec=SPEC, params=IntakeConfig(
        max_update_bytes=1024, max_sender_bytes=2048, max_total_bytes=MAX_TOTAL,
        partial_timeout_s=5))
    handed: list[tuple[bytes, list[torch.Tensor]]] = []

    # Execute
    for now, (index, op) in enumerate(steps):
        edge, frame = FRAMES[index] if index >= 0 else ("e1", b"")
        payload = op[1] if op[0] == "garbage" else (
            frame if op[0] == "deliver" else _mutate(frame, op))
        try:
            update = take(intake, payload, topic_edge=edge, state=STATE, counted=set(),
                                 now=float(now))
        except ProtocolError:
            update = None
        if update is not None:
            handed.append((update.header.sha256, update.delta))
        intake.expire(float(now))

        # Assert (every step)
        assert intake.held_bytes <= MAX_TOTAL

    # Assert
    for sha, delta in handed:
        assert sha in BY_HASH
        assert all(torch.equal(a, b) for a, b in zip(delta, BY_HASH[sha], strict=True))


def test_every_legit_frame_in_order_hands_on_every_update(take: Take) -> None:
    """Sanity for the fuzz oracle: unmutated frames give each sent update once."""
    # Prepare
    intake = Intake(spec=SPEC, params=IntakeConfig(max_update_bytes=1024,
                                                   max_sender_bytes=2048,
                                                   max_total_bytes=MAX_TOTAL))

    # Execute
    done = [u for edge, f in FRAMES
            if (u := take(intake, f, topic_edge=edge, state=STATE, counted=set(), now=0.0))]

    # Assert
    assert sorted(u.header.sha256 for u in done) == sorted(BY_HASH)
