"""The edge while its backend is measured, in-process against a real broker: the message loop
keeps serving (status, round announcements), a waiting round is trained once the choice is
made, and a round that waits too long is declined with backend_tuning."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from fedstream.edge_node.config import BackendConfig
from fedstream.edge_node.daemon import EdgeDaemon
from fedstream.shared.learning.backends.autotune import AutoTuner, TuneParams
from fedstream.shared.learning.backends.candidates import Candidate
from fedstream.shared.learning.backends.choice_cache import CACHE_FILE, ChoiceCache
from fedstream.shared.learning.backends.decision import Timing
from fedstream.shared.learning.backends.measure import Plan
from fedstream.shared.learning.cpu import detect_cpu
from fedstream.shared.learning.model import spec_of, tensors_of
from fedstream.shared.learning.models import build_model
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.control import (
    EdgeStatus,
    RoundState,
    RoundStatus,
    TrainParams,
)
from fedstream.shared.protocol.messages import Manifest, ModelChunk, UpdateChunk
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = pytest.mark.mosquitto

ARCH = Architecture.mlp((64, 16, 10))
Spy = Callable[..., "queue.Queue[Inbound]"]  # the `spy` fixture of tests/edge_node/conftest.py


class GatedMeasure:
    """A measurement that takes until the test opens its gate (stock fp32 wins)."""

    def __init__(self) -> None:
        self.gate, self.started = threading.Event(), threading.Event()

    def __call__(self, plan: Plan, candidates: Sequence[Candidate],
                 timeout_s: float) -> list[Timing]:
        self.started.set()
        assert self.gate.wait(60)
        return [Timing(candidate=c, step_s=0.001 if c.precision == "fp32" else 0.002,
                       loss=2.3) for c in candidates]


@pytest.fixture
def slow(connected_edge: EdgeDaemon) -> GatedMeasure:
    """The edge's tuner measuring stock fp32 and bf16 through a gate."""
    if not detect_cpu().has_bf16:
        pytest.skip("one candidate only (no native bf16): nothing to measure")
    measure = GatedMeasure()
    connected_edge.backends.tuner = AutoTuner(
        cache=ChoiceCache(connected_edge.cfg.data_dir / CACHE_FILE),
        params=TuneParams(preference="torch"), measure=measure)
    return measure


def _publish_model_and_round(edge: EdgeDaemon, round_id: str) -> None:
    """The cloud's side: the retained model v0 (manifest + chunks) and an open round."""
    topics, name = Topics(edge.cfg.federation), edge.cfg.model
    model = build_model(ARCH, seed=0)
    enc = encode_blob(tensors_of(model), spec_of(model), codec="f32", chunk_size=4096)
    frames = [(topics.model_chunk(name, 0, i), wire.pack(ModelChunk(
        header=enc.header, model=name, version=0, index=i, data=bytes(v))))
        for i, v in enumerate(enc.chunks)]
    frames.append((topics.manifest(name), wire.pack(Manifest(
        model=name, version=0, parent=None, header=enc.header, arch=ARCH))))
    state = RoundState(round_id=round_id, model=name, status=RoundStatus.OPEN, base_version=0,
                       deadline=1e12, train=TrainParams(epochs=1, lr=0.1, momentum=0.0,
                                                        batch_size=32),
                       codec="f32", selection=("e1",), quorum=1)
    frames.append((topics.round(name), wire.pack(state)))
    cloud = MqttClient(client_id=f"{edge.cfg.federation}-cloud", conn=edge.mqtt.conn,
                       on_message=lambda m: None, subscriptions=())
    cloud.connect(10)
    try:
        cloud.publish_many(frames, retain=True)
    finally:
        cloud.close()


def _serve(edge: EdgeDaemon, until: Callable[[], bool], timeout_s: float = 30.0) -> float:
    """Run the loop's body (`_handle` each inbox message) until `until()`; the longest one
    message took to handle."""
    longest, give_up = 0.0, time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < give_up, "the loop never got there"
        try:
            msg = edge._inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        began = time.monotonic()
        edge._handle(msg)
        longest = max(longest, time.monotonic() - began)
    return longest


def _next(got: queue.Queue[Inbound], wanted: Callable[[object], bool]) -> object:
    """The next message on the spy's topics that `wanted` accepts (others are skipped)."""
    while True:
        msg = wire.unpack(got.get(timeout=10).payload)
        if wanted(msg):
            return msg


def _status(msg: object) -> bool:
    return isinstance(msg, EdgeStatus)


def test_the_loop_serves_while_the_backend_is_measured(
    connected_edge: EdgeDaemon, slow: GatedMeasure, spy: Spy,
) -> None:
    """With measuring held up, the model and the round are handled at once, the status says
    "tuning", and no update goes out; once measuring ends the waiting round is trained and
    sent, and the status says "ready"."""
    # Prepare
    edge = connected_edge
    topics = Topics(edge.cfg.federation)
    seen = spy(topics.status("e1"), topics.update(edge.cfg.model, "e1"))
    _publish_model_and_round(edge, "r1")

    # Execute
    longest = _serve(edge, lambda: edge._pending is not None and edge.sync.current is not None)
    edge._publish_status(online=True)  # the loop's periodic status
    during = [_next(seen, _status), _next(seen, _status)]
    trained_early = len(edge.outbox.pending())
    slow.gate.set()
    _serve(edge, lambda: len(edge.outbox.pending()) == 1)
    update = _next(seen, lambda m: isinstance(m, UpdateChunk))
    ready = _next(seen, lambda m: _status(m) and m.last_round == "r1")  # type: ignore[attr-defined]

    # Assert
    assert longest < 1.0  # no message waited for the measuring
    assert trained_early == 0
    assert all(isinstance(s, EdgeStatus) and s.backend["state"] == "tuning" for s in during)
    assert isinstance(during[-1], EdgeStatus)
    assert "torch/fp32, torch/bf16" in str(during[-1].backend["tuning"])
    assert isinstance(update, UpdateChunk) and update.meta.round_id == "r1"
    assert isinstance(ready, EdgeStatus) and ready.backend["state"] == "ready"
    assert (ready.backend["backend"], ready.backend["precision"]) == ("torch", "fp32")


def test_a_round_that_waits_too_long_is_declined_then_trained(
    connected_edge: EdgeDaemon, slow: GatedMeasure, spy: Spy,
) -> None:
    """Past `backend.wait_s` the round is declined with backend_tuning (the cloud stops
    waiting); when measuring ends and the round is still open, the edge trains it anyway."""
    # Prepare
    edge = connected_edge
    edge.backends.cfg = BackendConfig(wait_s=0.2)
    topics = Topics(edge.cfg.federation)
    seen = spy(topics.status("e1"))
    _publish_model_and_round(edge, "r2")

    # Execute
    _serve(edge, lambda: edge._declined[0] == "r2")
    declined = _next(seen, lambda m: _status(m) and m.declined == "r2")  # type: ignore[attr-defined]
    slow.gate.set()
    _serve(edge, lambda: len(edge.outbox.pending()) == 1)

    # Assert
    assert isinstance(declined, EdgeStatus)
    assert declined.decline_reason == "backend_tuning"
    assert declined.backend["state"] == "tuning"
    assert edge._last_trained == "r2"
