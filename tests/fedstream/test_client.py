"""FleetClient (fedstream/client.py) against a real Mosquitto with no cloud behind it."""

from __future__ import annotations

import pytest

from fedstream.broker import Mosquitto
from fedstream.client import FleetAddress, FleetClient
from fedstream.shared.errors import Reason, TransportError
from fedstream.shared.protocol import wire
from fedstream.shared.protocol.commands import StatusQuery, StatusReply
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.control import RoundState, RoundStatus, TrainParams
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
