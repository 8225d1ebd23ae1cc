"""FleetClient (fedstream/client.py) against a real Mosquitto with no cloud behind it."""

from __future__ import annotations

import dataclasses
import time

import pytest

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress, FleetClient
from fedstream.shared.errors import Reason, TransportError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.commands import StatusQuery, StatusReply
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.control import (
    RoundProgress,
    RoundState,
    RoundStatus,
    TrainParams,
)
from fedstream.shared.protocol.mqtt import MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = pytest.mark.mosquitto

MODEL = "digits-mlp"


def _ask_status(broker: Mosquitto, federation: str) -> TransportError:
    """The error of a status command nobody answers, with a short timeout."""
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model=MODEL, timeout_s=0.3)
    with pytest.raises(TransportError) as info, FleetClient(address) as fleet:
        fleet.command(StatusQuery(), StatusReply)
    return info.value


def test_no_cloud_on_the_federation_names_federation_and_broker(
        broker: Mosquitto, federation: str) -> None:
    """Defect 8: with no cloud ever on the federation, no_reply says which federation and
    broker it tried and that no cloud ever published there."""
    # Execute
    err = _ask_status(broker, federation)

    # Assert
    assert err.reason is Reason.NO_REPLY
    assert f"federation {federation!r} at {broker.host}:{broker.port}" in err.detail
    assert "within 0.3s" in err.detail
    assert "no cloud has ever published" in err.detail
    assert "is a cloud serving that federation there?" in err.detail


def test_a_cloud_that_served_before_is_told_apart(broker: Mosquitto, federation: str) -> None:
    """A retained round state left by an earlier cloud makes no_reply say the federation's
    cloud is stopped or busy, not that the name is wrong."""
    # Prepare
    topics = Topics(federation)
    left = RoundState(round_id="r1", model=MODEL, status=RoundStatus.PUBLISHED, base_version=0,
                      deadline=0.0, train=TrainParams(epochs=1, lr=0.1, momentum=0.0,
                                                      batch_size=8),
                      codec="f32", selection=("e1",), quorum=1)
    old_cloud = MqttClient(client_id=f"{federation}-old-cloud",
                           conn=Connection(host=broker.host, port=broker.port))
    old_cloud.connect(10)
    try:
        old_cloud.publish(topics.round(MODEL), wire.pack(left), retain=True)

        # Execute
        err = _ask_status(broker, federation)
    finally:
        old_cloud.clear_retained([topics.round(MODEL)])
        old_cloud.close()

    # Assert
    assert err.reason is Reason.NO_REPLY
    assert f"federation {federation!r} at {broker.host}:{broker.port}" in err.detail
    assert "has served model 'digits-mlp' on that federation there before" in err.detail


def test_following_a_round_merges_its_counts_into_its_state(broker: Mosquitto,
                                                            federation: str) -> None:
    """`wait_round` hands on each round state and, between them, the last state with each
    newer `RoundProgress` count; counts of another round or older ones are skipped, and the
    terminal state ends it."""
    # Prepare
    topics = Topics(federation)
    train = TrainParams(epochs=1, lr=0.1, momentum=0.0, batch_size=8)
    state = RoundState(round_id="r1", model=MODEL, status=RoundStatus.COLLECTING,
                       base_version=0, deadline=time.time() + 60, train=train, codec="f32",
                       selection=("e1", "e2", "e3"), quorum=1, received=1)
    done = dataclasses.replace(state, status=RoundStatus.PUBLISHED, received=3)
    cloud = MqttClient(client_id=f"{federation}-cloud",
                       conn=Connection(host=broker.host, port=broker.port))
    cloud.connect(10)
    seen: list[tuple[str, int]] = []
    address = FleetAddress.local(host=broker.host, port=broker.port, federation=federation,
                                 model=MODEL)

    # Execute
    with FleetClient(address) as fleet:
        cloud.publish(topics.round(MODEL), wire.pack(state), retain=True)
        for progress in (RoundProgress(round_id="r0", received=9, expected=9),
                         RoundProgress(round_id="r1", received=2, expected=3),
                         RoundProgress(round_id="r1", received=1, expected=3)):
            cloud.publish(topics.round_progress(MODEL), wire.pack(progress))
        cloud.publish(topics.round(MODEL), wire.pack(done), retain=True)
        final = fleet.wait_round("r1", on_change=lambda s: seen.append((s.status, s.received)))
    cloud.clear_retained([topics.round(MODEL)])
    cloud.close()

    # Assert
    assert seen == [("collecting", 1), ("collecting", 2), ("published", 3)]
    assert final == done
