"""The cloud service's periodic tick, in-process against a real broker: a failure there is
logged and recovered from, never fatal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from structlog.testing import capture_logs

from fedstream.broker import Mosquitto
from fedstream.cloud.config import ArchitectureConfig, CloudConfig
from fedstream.cloud.service import CloudService
from fedstream.cloud.wiring import build_cloud
from fedstream.shared.errors import Reason, TransportError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.arch import Architecture
from fedstream.shared.protocol.blobs import encode_blob
from fedstream.shared.protocol.commands import RoundStart
from fedstream.shared.protocol.control import EdgeStatus
from fedstream.shared.protocol.messages import UpdateChunk, UpdateMeta

pytestmark = pytest.mark.mosquitto

ARCH = Architecture.mlp((64, 8, 10))
ARCH_CFG = ArchitectureConfig.of(ARCH)


@pytest.fixture
def service(broker: Mosquitto, federation: str, tmp_path: Path) -> Iterator[CloudService]:
    """A cloud built from its config against the real broker, connected, with a sync round of
    two edges open (deadline 10 s, quorum 1) and one update from e1 accepted at t=1."""
    cfg = CloudConfig(federation=federation, architecture=ARCH_CFG, data_dir=tmp_path / "cloud",
                      broker={"host": broker.host, "port": broker.port},
                      rounds={"deadline_s": 10.0, "quorum": 1})
    built = build_cloud(cfg)
    built.mqtt.connect(10)
    try:
        built.coordinator.recover(0.0)
        for edge in ("e1", "e2"):
            built.coordinator.on_status(EdgeStatus(edge_id=edge, online=True), 0.0)
        state = built.coordinator.start_round(0.0, RoundStart())
        delta = [torch.full(t.shape, 0.01) for t in built.coordinator.spec]
        enc = encode_blob(delta, built.coordinator.spec, codec="f32", chunk_size=4096)
        meta = UpdateMeta(edge_id="e1", round_id=state.round_id, base_version=0, samples=5,
                          loss=0.1)
        for i, view in enumerate(enc.chunks):
            built.receiver.on_frame(wire.pack(UpdateChunk(header=enc.header, meta=meta,
                                                          index=i, data=bytes(view))),
                                    "e1", 1.0)
        yield built
    finally:
        built.mqtt.close()
        built.store.close()



def test_publish_failure_at_the_deadline_is_logged_and_the_round_recovers(
    service: CloudService, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The broker refuses the model publish at the round's deadline: the tick logs
    `tick_failed` with the reason and returns; the next tick recovers the round (as after a
    restart) and publishes v1 from the same accepted update."""
    # Prepare
    real_publish = service.outlet.publisher.publish
    refusals = []

    def refuse_once(**kwargs: object) -> int:
        if not refusals:
            refusals.append(kwargs["version"])
            raise TransportError(Reason.PUBLISH_FAILED, "refused by the test")
        return real_publish(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service.outlet.publisher, "publish", refuse_once)

    # Execute
    with capture_logs() as logs:
        service.tick(11.0)
        failed = service.coordinator.round
        service.tick(12.0)

    # Assert
    events = [e for e in logs if e["event"] in ("tick_failed", "round_resumed")]
    assert [(e["event"], e.get("reason")) for e in events] == [
        ("tick_failed", "publish_failed"), ("round_resumed", None)]
    assert refusals == [1]
    assert failed is not None and failed.status == "aggregating"
    final = service.coordinator.round
    assert final is not None and final.status == "published" and final.received == 1
    assert service.coordinator.current.version == 1
    assert [v.version for v in service.store.journal.versions()] == [0, 1]


def test_a_failure_that_persists_is_retried_with_backoff_not_on_every_tick(
    service: CloudService, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every model publish refused, the aggregation fails at the deadline and its
    recovery is tried again 1, 2, 4 and 8 s after each failure (not at each of the 80 ticks
    of 0.25 s), while the receiver's tick runs at every one."""
    # Prepare
    attempts: list[float] = []
    receiver_ticks: list[float] = []
    clock = {"now": 0.0}

    def refuse(**kwargs: object) -> int:
        attempts.append(clock["now"])
        raise TransportError(Reason.PUBLISH_FAILED, "refused by the test")

    real_tick = service.receiver.tick
    monkeypatch.setattr(service.outlet.publisher, "publish", refuse)
    monkeypatch.setattr(service.receiver, "tick",
                        lambda now: (receiver_ticks.append(now), real_tick(now)))

    # Execute
    for step in range(80):
        clock["now"] = 10.5 + step * 0.25
        service.tick(clock["now"])

    # Assert
    assert attempts == [10.5, 11.5, 13.5, 17.5, 25.5]
    assert len(receiver_ticks) == 80
