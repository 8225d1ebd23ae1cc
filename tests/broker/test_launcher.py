"""Tests for fedstream.broker.launcher and run: a real Mosquitto on a free loopback port."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from fedstream.broker import BrokerParams, Mosquitto, find_free_port
from fedstream.shared.errors import ConfigError, Reason, TransportError

WAIT_S = 5.0


@contextmanager
def connected_client(broker: Mosquitto) -> Iterator[mqtt.Client]:
    """Yield a paho MQTT v5 client connected to `broker`, disconnected on exit."""
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"test-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, rc, _p: connected.set() if not rc.is_failure else None
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert connected.wait(WAIT_S), "client did not connect"
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish_retained(broker: Mosquitto, topic: str, payload: bytes) -> None:
    """Publish a retained QoS 1 message and wait for its PUBACK."""
    with connected_client(broker) as client:
        info = client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(WAIT_S)
        assert info.is_published()


def read_retained(broker: Mosquitto, topic: str) -> mqtt.MQTTMessage:
    """Subscribe with a fresh client and return the retained message on `topic`."""
    received: list[mqtt.MQTTMessage] = []
    arrived = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(msg)
        arrived.set()

    with connected_client(broker) as client:
        client.on_message = on_message
        client.subscribe(topic, qos=1)
        assert arrived.wait(WAIT_S), "no retained message arrived"
    return received[0]


@pytest.fixture
def topic() -> str:
    """A topic unique to one test."""
    return f"fedstream-test/{uuid.uuid4().hex}/model"


@pytest.mark.mosquitto
def test_retained_qos1_message_reaches_second_client(tmp_path: Path, topic: str) -> None:
    """A retained QoS 1 message published by one client is read back by another."""
    # Prepare
    with capture_logs() as events, Mosquitto(BrokerParams(data_dir=tmp_path)) as broker:
        # Execute
        publish_retained(broker, topic, b"weights-v1")
        msg = read_retained(broker, topic)

    # Assert
    assert (msg.payload, msg.retain, msg.qos) == (b"weights-v1", True, 1)
    assert broker.port > 0
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert [e["event"] for e in events] == ["broker_started", "broker_stopped"]


@pytest.mark.mosquitto
def test_restart_keeps_retained_message(tmp_path: Path, topic: str) -> None:
    """restart() keeps the port and, through persistence, the retained message."""
    # Prepare
    with Mosquitto(BrokerParams(data_dir=tmp_path)) as broker:
        publish_retained(broker, topic, b"weights-v2")
        port, pid = broker.port, broker.pid

        # Execute
        broker.restart()

        # Assert
        assert (broker.port, broker.pid != pid) == (port, True)
        assert read_retained(broker, topic).payload == b"weights-v2"
    assert (tmp_path / "mosquitto.db").is_file()


@pytest.mark.mosquitto
def test_stop_is_idempotent_and_frees_port(tmp_path: Path) -> None:
    """stop() twice is harmless and leaves the port free to bind."""
    # Prepare
    broker = Mosquitto(BrokerParams(data_dir=tmp_path, port=find_free_port()))
    broker.start()

    # Execute
    broker.stop()
    broker.stop()

    # Assert
    assert broker.pid is None
    with socket.socket() as sock:
        sock.bind((broker.host, broker.port))


def test_busy_port_raises_transport_error(tmp_path: Path) -> None:
    """A port another process listens on fails start() before spawning the broker."""
    # Prepare
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = Mosquitto(BrokerParams(data_dir=tmp_path, port=taken.getsockname()[1]))

        # Execute
        with pytest.raises(TransportError) as caught:
            broker.start()

    # Assert
    assert caught.value.reason is Reason.BROKER_FAILED
    assert "cannot listen on 127.0.0.1" in caught.value.detail
    assert broker.pid is None


def test_early_exit_raises_with_log_tail(tmp_path: Path) -> None:
    """A broker process that exits at once fails start() with its exit code and log tail."""
    # Prepare
    (tmp_path / "mosquitto.log").write_text("Error: something the broker said\n")
    broker = Mosquitto(BrokerParams(data_dir=tmp_path, mosquitto="false"))

    # Execute
    with pytest.raises(TransportError) as caught:
        broker.start()

    # Assert
    assert caught.value.reason is Reason.BROKER_FAILED
    assert "exited with code 1" in caught.value.detail
    assert "something the broker said" in caught.value.detail
    assert broker.pid is None


def test_missing_binary_raises_transport_error(tmp_path: Path) -> None:
    """A binary path that does not exist fails start() with reason broker_failed."""
    # Prepare
    broker = Mosquitto(BrokerParams(data_dir=tmp_path, mosquitto=str(tmp_path / "no-mosquitto")))

    # Execute
    with pytest.raises(TransportError) as caught:
        broker.start()

    # Assert
    assert caught.value.reason == "broker_failed"
    assert "apt-get install mosquitto" in caught.value.detail


@pytest.mark.parametrize("port", [70000, -1])
def test_bad_port_raises_config_error(tmp_path: Path, port: int) -> None:
    """A port outside 0..65535 is rejected when the params are built."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        BrokerParams(data_dir=tmp_path, port=port)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG


@pytest.mark.mosquitto
def test_run_broker_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """run_broker prints where it listens and returns 0 after SIGTERM."""
    # Prepare
    code = (
        "import sys; from fedstream.broker import BrokerParams, run_broker; "
        "sys.exit(run_broker(BrokerParams(data_dir=sys.argv[1])))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        lines = iter(proc.stdout.readline, "")
        banner = next(line for line in lines if line.startswith("mosquitto listening"))

        # Execute
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(WAIT_S * 2)
    finally:
        proc.kill()

    # Assert
    assert banner.startswith("mosquitto listening on 127.0.0.1:")
    assert banner.rstrip().endswith(f"(data {tmp_path})")
    assert returncode == 0
