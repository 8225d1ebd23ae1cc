"""Sensor intake and its own broker going away: it reconnects after a restart, connects to a
broker that starts after it, and stops in bounded time when none ever answers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fedstream.broker import BrokerParams, Mosquitto
from fedstream.broker.launcher import find_free_port
from fedstream.edge_node.sensors.config import SensorsConfig
from fedstream.edge_node.sensors.intake import SensorIntake
from fedstream.shared.config import BrokerConfig

pytestmark = pytest.mark.mosquitto


def _until(pred: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll `pred` until it holds or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


CFG = SensorsConfig(
    channels=[{"name": "temp", "topic": "gw/temp", "format": "json", "field": "v",
               "time_field": "t"}],
    labels="forecast", horizon=1, targets=["temp"],
    align={"rate_hz": 1.0, "max_gap_s": 2.0}, windows={"length": 4, "stride": 1})


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test alone (the session one must not be stopped), not started."""
    broker = Mosquitto(BrokerParams(port=find_free_port(), data_dir=tmp_path / "mosquitto"))
    yield broker
    broker.stop()


class _Device:
    """A paho publisher that reconnects by itself, as a sensor would."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"dev-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        self.sent = 0

    def send(self) -> None:
        """One reading at a new time (t = 1000, 1001, ...)."""
        self.client.publish("gw/temp", json.dumps({"v": 20.0, "t": 1000 + self.sent}), qos=0)
        self.sent += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _stored_more(intake: SensorIntake, device: _Device, timeout_s: float = 10.0) -> bool:
    """Send readings until the store holds one more than now."""
    before = intake.counts().rows

    def grew() -> bool:
        device.send()
        return intake.counts().rows > before

    return _until(grew, timeout_s)


def test_the_intake_reconnects_after_its_broker_restarts(own_broker: Mosquitto,
                                                         tmp_path: Path) -> None:
    """Readings stored before a broker restart stay, the intake counts one reconnect, and
    readings sent afterwards are stored too."""
    # Prepare
    own_broker.start()
    intake = SensorIntake.open(CFG, "edge-r", tmp_path, BrokerConfig(port=own_broker.port))
    intake.start()
    assert intake.wait_connected(10)
    device = _Device(own_broker.port)
    assert _stored_more(intake, device)

    # Execute
    own_broker.stop()
    went_away = _until(lambda: not intake.connected)
    own_broker.start()
    back = _until(lambda: intake.counts().reconnects == 1, 15.0)
    after = _stored_more(intake, device)
    counts = intake.counts()
    device.close()
    intake.stop()

    # Assert
    assert went_away and back and after, counts
    assert counts.connected and counts.reconnects == 1
    assert counts.rows >= 2 and counts.failed == 0


def test_the_intake_connects_to_a_broker_that_starts_after_it(own_broker: Mosquitto,
                                                              tmp_path: Path) -> None:
    """Started while nothing listens, the intake keeps trying and collects once the broker
    is up (a gateway's broker may start after the edge daemon)."""
    # Prepare
    intake = SensorIntake.open(CFG, "edge-late", tmp_path, BrokerConfig(port=own_broker.port))
    intake.start()
    early = intake.wait_connected(0.5)

    # Execute
    own_broker.start()
    connected = intake.wait_connected(15)
    device = _Device(own_broker.port)
    stored = _stored_more(intake, device)
    device.close()
    intake.stop()

    # Assert
    assert not early and connected and stored


def test_stop_is_bounded_when_no_broker_ever_answers(tmp_path: Path) -> None:
    """With nothing listening, stop(1.0) returns and the store is closed; the connector
    thread, still in its attempt, ends by itself."""
    # Prepare
    port = find_free_port()
    intake = SensorIntake.open(CFG, "edge-none", tmp_path, BrokerConfig(port=port))
    intake.start()

    # Execute
    started = time.monotonic()
    intake.stop(1.0)
    took = time.monotonic() - started

    # Assert
    assert took < 5.0
    assert not intake.connected
