"""The MQTT adapter against a real Mosquitto: PUBACK-confirmed publishes, manual ack,
request/response, retained clears, and a clear error when no broker listens."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from structlog.testing import capture_logs

from fedstream.broker import BrokerParams, Mosquitto, find_free_port, launcher
from fedstream.shared.errors import Reason, TransportError
from fedstream.shared.protocol._puback import Refusals
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.mqtt import Inbound, MqttClient, Will
from fedstream.shared.protocol.topics import Topic, Topics

pytestmark = pytest.mark.mosquitto


def _client(broker: Mosquitto, name: str, inbox: queue.Queue[Inbound] | None = None,
            subs: tuple[Topic, ...] = (), **kw: object) -> MqttClient:
    client = MqttClient(client_id=name, conn=Connection(host=broker.host, port=broker.port),
                        on_message=inbox.put if inbox is not None else None,
                        subscriptions=subs, **kw)  # type: ignore[arg-type]
    client.connect(10)
    return client


def test_publish_many_arrives_in_order(broker: Mosquitto, federation: str) -> None:
    """Every QoS 1 publish is confirmed and a subscriber sees all of them in order."""
    # Prepare
    topic = Topics(federation).update("m", "e1")
    inbox: queue.Queue[Inbound] = queue.Queue()
    sub = _client(broker, f"{federation}-sub", inbox, (topic,))
    pub = _client(broker, f"{federation}-pub")

    # Execute
    pub.publish_many((topic, bytes([i]) * 1000) for i in range(50))
    got = [inbox.get(timeout=10).payload[0] for _ in range(50)]

    # Assert
    assert got == list(range(50))
    pub.close()
    sub.close()


def test_manual_ack_redelivers_unacked_message_after_reconnect(
    broker: Mosquitto, federation: str
) -> None:
    """A persistent-session client that never acked a message gets it again on reconnect."""
    # Prepare
    topic = Topics(federation).update("m", "e1")
    first: queue.Queue[Inbound] = queue.Queue()
    consumer = _client(broker, f"{federation}-c", first, (topic,), persistent=True,
                       manual_ack=True)
    producer = _client(broker, f"{federation}-p")
    producer.publish(topic, b"keep me")
    assert first.get(timeout=10).payload == b"keep me"
    consumer.close()  # without acking

    # Execute
    second: queue.Queue[Inbound] = queue.Queue()
    again = _client(broker, f"{federation}-c", second, (topic,), persistent=True,
                    manual_ack=True)
    redelivered = second.get(timeout=10)
    again.ack(redelivered)

    # Assert
    assert redelivered.payload == b"keep me"
    again.close()
    producer.close()


def test_request_gets_the_matching_reply(broker: Mosquitto, federation: str) -> None:
    """A v5 request is answered on its response topic with the same correlation data."""
    # Prepare
    topics = Topics(federation)
    requests: queue.Queue[Inbound] = queue.Queue()
    server = _client(broker, f"{federation}-srv", requests, (topics.command("ping"),))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                msg = requests.get(timeout=0.2)
            except queue.Empty:
                continue
            server.reply(msg, b"pong:" + msg.payload)

    thread = threading.Thread(target=serve)
    thread.start()
    reply_to = topics.reply("anonymous", "cli1")
    client = _client(broker, f"{federation}-cli", subs=(reply_to,))

    # Execute
    answer = client.request(topics.command("ping"), b"hi", reply_to, timeout_s=10)

    # Assert
    assert answer.payload == b"pong:hi"
    stop.set()
    thread.join()
    client.close()
    server.close()


def test_request_without_a_server_is_no_reply(broker: Mosquitto, federation: str) -> None:
    """Nobody answering a request is a TransportError with reason no_reply."""
    # Prepare
    topics = Topics(federation)
    reply_to = topics.reply("anonymous", "cli2")
    client = _client(broker, f"{federation}-lonely", subs=(reply_to,))

    # Execute
    with pytest.raises(TransportError) as caught:
        client.request(topics.command("status"), b"", reply_to, timeout_s=0.5)

    # Assert
    assert caught.value.reason is Reason.NO_REPLY
    client.close()


def test_connect_to_nothing_is_broker_unreachable() -> None:
    """A port where no broker listens gives broker_unreachable once the deadline passes."""
    # Prepare
    client = MqttClient(client_id="nobody",
                        conn=Connection(host="127.0.0.1", port=find_free_port()))

    # Execute
    with pytest.raises(TransportError) as caught:
        client.connect(timeout_s=0.5)

    # Assert
    assert caught.value.reason is Reason.BROKER_UNREACHABLE


def test_connect_retries_until_a_starting_broker_listens(tmp_path: Path) -> None:
    """Refused TCP connections are retried: a broker that starts meanwhile is reached."""
    # Prepare
    late = Mosquitto(BrokerParams(port=find_free_port(), data_dir=tmp_path / "broker"))
    client = MqttClient(client_id="patient", conn=Connection(host=late.host, port=late.port))
    failed: list[TransportError] = []

    def connect() -> None:
        try:
            client.connect(timeout_s=20)
        except TransportError as err:
            failed.append(err)

    # Execute
    with capture_logs() as logs:
        thread = threading.Thread(target=connect)
        thread.start()
        # The process's own wait paces this, so a connect that ends early ends it too.
        while thread.is_alive() and not any(e["event"] == "retry_scheduled" for e in logs):
            thread.join(0.02)
        with late:
            thread.join()
            client.close()

    # Assert
    assert failed == []
    assert any(e["event"] == "retry_scheduled" and e["op"] == "connect" for e in logs)


def test_connect_to_an_unknown_host_fails_at_once() -> None:
    """A host name that does not resolve is broker_unknown_host at once, not after the deadline."""
    # Prepare
    client = MqttClient(client_id="typo", conn=Connection(host="nohost.invalid", port=1883))
    started = time.monotonic()

    # Execute
    with pytest.raises(TransportError) as caught:
        client.connect(timeout_s=20)

    # Assert
    assert caught.value.reason is Reason.BROKER_UNKNOWN_HOST
    assert "nohost.invalid" in caught.value.detail
    assert time.monotonic() - started < 20


@pytest.fixture
def closed_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mosquitto]:
    """A real Mosquitto that answers anonymous clients with a "Not authorized" CONNACK.

    The launcher's template allows anonymous clients; a later `allow_anonymous` line wins.
    """
    # The launcher has no auth option yet: wrap its renderer.
    render = launcher._render
    monkeypatch.setattr(launcher, "_render",
                        lambda **kw: f"{render(**kw)}\nallow_anonymous false\n")
    with Mosquitto(BrokerParams(port=0, data_dir=tmp_path / "broker")) as running:
        yield running


def test_connect_refused_by_the_broker_fails_at_once(closed_broker: Mosquitto) -> None:
    """A CONNACK refusal is broker_refused at once, and paho stops reconnecting."""
    # Prepare
    client = MqttClient(client_id="anonymous-refused",
                        conn=Connection(host=closed_broker.host, port=closed_broker.port))
    started = time.monotonic()

    # Execute
    with pytest.raises(TransportError) as caught:
        client.connect(timeout_s=20)

    # Assert
    assert caught.value.reason is Reason.BROKER_REFUSED
    assert "Not authorized" in caught.value.detail
    assert f"{closed_broker.host}:{closed_broker.port}" in caught.value.detail
    assert time.monotonic() - started < 20
    assert "paho-mqtt-client-anonymous-refused" not in [t.name for t in threading.enumerate()]


@pytest.mark.parametrize("will", [True, False])
def test_close_has_the_broker_publish_the_will_only_when_asked(
    broker: Mosquitto, federation: str, will: bool
) -> None:
    """close(will=True) ends the session so that the broker publishes the last will; a plain
    close() does not."""
    # Prepare
    topic = Topics(federation).status("e1")
    inbox: queue.Queue[Inbound] = queue.Queue()
    watcher = _client(broker, f"{federation}-watch", inbox, (topic,))
    leaving = _client(broker, f"{federation}-leave", will=Will(topic, b"gone", retain=False))
    leaving.publish(topic, b"here")
    assert inbox.get(timeout=10).payload == b"here"

    # Execute
    leaving.close(will=will)
    watcher.publish(topic, b"marker")  # ends what the watcher waits for
    got = {inbox.get(timeout=10).payload for _ in range(2 if will else 1)}

    # Assert
    assert got == ({b"gone", b"marker"} if will else {b"marker"})
    watcher.close()


def test_an_unwaited_publish_arrives(broker: Mosquitto, federation: str) -> None:
    """`publish_unwaited` returns at once and the message reaches a subscriber."""
    # Prepare
    topic = Topics(federation).receipt("e1")
    inbox: queue.Queue[Inbound] = queue.Queue()
    sub = _client(broker, f"{federation}-sub", inbox, (topic,))
    pub = _client(broker, f"{federation}-pub")

    # Execute
    for i in range(20):
        pub.publish_unwaited(topic, bytes([i]))
    got = [inbox.get(timeout=10).payload[0] for _ in range(20)]

    # Assert
    assert got == list(range(20))
    pub.close()
    sub.close()


@pytest.fixture
def acl_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mosquitto]:
    """A real Mosquitto whose ACL lets anonymous clients use `open/#` only: a publish
    elsewhere is refused with PUBACK 0x87 (not authorized)."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite open/#\n")
    render = launcher._render  # the launcher has no ACL option for plain listeners
    monkeypatch.setattr(launcher, "_render", lambda **kw: f"{render(**kw)}\nacl_file {acl}\n")
    with Mosquitto(BrokerParams(port=0, data_dir=tmp_path / "broker")) as running:
        yield running


def test_an_unwaited_publish_the_broker_refuses_is_logged(acl_broker: Mosquitto) -> None:
    """A publish the ACL refuses: logged as `publish_refused` with the topic and reason,
    nothing raised, and the client goes on."""
    # Prepare
    denied, allowed = Topic("closed/receipt"), Topic("open/receipt")
    pub = _client(acl_broker, "unwaited")

    # Execute
    with capture_logs() as logs:
        pub.publish_unwaited(denied, b"verdict")
        pub.publish(allowed, b"next")  # PUBACKs come in order: the refusal's is in by now

    # Assert
    refused = [e for e in logs if e["event"] == "publish_refused"]
    assert [(e["topic"], e["reason"]) for e in refused] == [(str(denied), "Not authorized")]
    pub.close()


def test_refusals_are_logged_once_per_reason_and_interval() -> None:
    """A flood of refusals of one reason is one line, then one line per interval saying how
    many more came; another reason gets its own line at once."""
    # Prepare
    refusals = Refusals(every_s=3600.0)
    denied = ReasonCode(PacketTypes.PUBACK, identifier=0x87)
    quota = ReasonCode(PacketTypes.PUBACK, identifier=0x97)

    # Execute
    with capture_logs() as logs:
        for i in range(5):
            refusals(Topic(f"receipt/e{i}"), denied)
        refusals(Topic("receipt/q"), quota)
        refusals(Topic("receipt/ok"), ReasonCode(PacketTypes.PUBACK, identifier=0))
        refusals.every_s = 0.0
        refusals(Topic("receipt/e9"), denied)

    # Assert
    assert [(e["topic"], e["reason"], e["more"]) for e in logs] == [
        ("receipt/e0", "Not authorized", 0), ("receipt/q", "Quota exceeded", 0),
        ("receipt/e9", "Not authorized", 4)]
