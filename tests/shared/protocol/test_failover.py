"""An MQTT client with several broker nodes (`Connection.failover`) and with credentials,
against real Mosquittos: the first node that answers is used, a lost node hands the session
to the next, and username/password reach the broker."""

from __future__ import annotations

import contextlib
import queue
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fedstream.broker import BrokerParams, Mosquitto, find_free_port, launcher
from fedstream.shared.config import BrokerConfig
from fedstream.shared.errors import ConfigError, Reason, TransportError
from fedstream.shared.protocol._nodes import CONNACK_WAIT_S
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.mqtt import Inbound, MqttClient
from fedstream.shared.protocol.topics import Topics

pytestmark = pytest.mark.mosquitto

WAIT_S = 30.0


@pytest.fixture
def two_brokers(tmp_path: Path) -> Iterator[tuple[Mosquitto, Mosquitto]]:
    """Two independent Mosquittos standing for two nodes of one cluster."""
    with (Mosquitto(BrokerParams(port=0, data_dir=tmp_path / "a")) as a,
          Mosquitto(BrokerParams(port=0, data_dir=tmp_path / "b")) as b):
        yield a, b


def _on(node: Mosquitto, name: str) -> MqttClient:
    client = MqttClient(client_id=name, conn=Connection(host=node.host, port=node.port))
    client.connect(10)
    return client


def test_a_lost_node_hands_the_session_to_the_next(
        two_brokers: tuple[Mosquitto, Mosquitto], federation: str) -> None:
    """Killed under it, the client reconnects to the failover node, subscribes there again
    and receives what is published there; the turn is logged."""
    # Prepare
    a, b = two_brokers
    topic = Topics(federation).round("m")
    inbox: queue.Queue[Inbound] = queue.Queue()
    reconnected: queue.Queue[str] = queue.Queue()
    client = MqttClient(client_id=f"{federation}-edge",
                        conn=Connection(host=a.host, port=a.port, failover=((b.host, b.port),)),
                        on_message=inbox.put, subscriptions=(topic,), persistent=True,
                        on_reconnect=lambda: reconnected.put("again"))
    client.connect(10)
    on_b = _on(b, f"{federation}-cloud")

    # Execute
    with capture_logs() as logs:
        a.kill()
        reconnected.get(timeout=WAIT_S)
        # Retained, as the round state is: our SUBSCRIBE to b may still be on its way.
        on_b.publish(topic, b"through b", retain=True)
        got = inbox.get(timeout=WAIT_S)

    # Assert
    assert got.payload == b"through b"
    assert client.address == f"{b.host}:{b.port}"
    turns = [e for e in logs if e["event"] == "broker_failover"]
    assert turns[0]["lost"] == f"{a.host}:{a.port}" and turns[0]["to"] == client.address
    client.close()
    on_b.clear_retained([topic])
    on_b.close()


def test_connect_passes_over_a_node_that_is_down(
        two_brokers: tuple[Mosquitto, Mosquitto], federation: str) -> None:
    """With the first node down at start, `connect` reaches the next one."""
    # Prepare
    a, b = two_brokers
    a.stop()
    client = MqttClient(client_id=f"{federation}-late",
                        conn=Connection(host=a.host, port=a.port, failover=((b.host, b.port),)))

    # Execute
    client.connect(10)

    # Assert
    assert client.connected and client.address == f"{b.host}:{b.port}"
    client.close()


@pytest.fixture
def mute_node() -> Iterator[tuple[str, int]]:
    """A loopback port that accepts TCP connections and never answers (a hung node)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[:2]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_node_that_takes_the_connection_but_never_answers_passes_the_turn(
        mute_node: tuple[str, int], broker: Mosquitto, federation: str) -> None:
    """A first node that accepts TCP but sends no CONNACK is left after CONNACK_WAIT_S for
    the next one (logged `broker_failover`, reason "no CONNACK"); `connect` succeeds there."""
    # Prepare
    host, port = mute_node
    client = MqttClient(client_id=f"{federation}-patient", conn=Connection(
        host=host, port=port, failover=((broker.host, broker.port),)))

    # Execute
    with capture_logs() as logs:
        client.connect(timeout_s=CONNACK_WAIT_S + 10)

    # Assert
    assert client.connected and client.address == f"{broker.host}:{broker.port}"
    turns = [e for e in logs if e["event"] == "broker_failover"]
    assert [(t["lost"], t["reason"]) for t in turns] == [(f"{host}:{port}", "no CONNACK")]
    client.close()


def test_one_node_that_never_answers_is_broker_unreachable(
        mute_node: tuple[str, int]) -> None:
    """With one node, no CONNACK until the deadline is broker_unreachable, as before."""
    # Prepare
    host, port = mute_node
    client = MqttClient(client_id="alone", conn=Connection(host=host, port=port))

    # Execute
    with pytest.raises(TransportError) as caught:
        client.connect(timeout_s=1.0)

    # Assert
    assert caught.value.reason is Reason.BROKER_UNREACHABLE
    assert "no CONNACK" in caught.value.detail


def test_a_node_whose_name_does_not_resolve_passes_the_turn(broker: Mosquitto,
                                                            federation: str) -> None:
    """A first node whose host name does not resolve is passed over at the first connect;
    with every node's name unresolvable it is broker_unknown_host at once, as with one."""
    # Prepare
    client = MqttClient(client_id=f"{federation}-typo", conn=Connection(
        host="nohost.invalid", port=1883, failover=((broker.host, broker.port),)))
    hopeless = MqttClient(client_id=f"{federation}-typos", conn=Connection(
        host="nohost.invalid", port=1883, failover=(("nohost2.invalid", 1883),)))

    # Execute
    client.connect(timeout_s=10)
    with pytest.raises(TransportError) as caught:
        hopeless.connect(timeout_s=20)

    # Assert
    assert client.connected and client.address == f"{broker.host}:{broker.port}"
    assert caught.value.reason is Reason.BROKER_UNKNOWN_HOST
    client.close()


def test_no_node_answering_is_broker_unreachable() -> None:
    """Every node down: broker_unreachable once the deadline passes, as with one node."""
    # Prepare
    nodes = [("127.0.0.1", find_free_port()) for _ in range(3)]
    client = MqttClient(client_id="nobody", conn=Connection(
        host=nodes[0][0], port=nodes[0][1], failover=tuple(nodes[1:])))

    # Execute
    with pytest.raises(TransportError) as caught:
        client.connect(timeout_s=0.5)

    # Assert
    assert caught.value.reason is Reason.BROKER_UNREACHABLE
    assert "(+2 failover)" in caught.value.detail


@pytest.fixture
def password_broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Mosquitto]:
    """A real Mosquitto taking only user "gw" with password "s3cret" (mosquitto_passwd)."""
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "gw", "s3cret"],
                   check=True, capture_output=True)
    passwords.chmod(0o644)
    render = launcher._render  # the launcher has no auth option: a later line wins
    monkeypatch.setattr(launcher, "_render", lambda **kw: (
        f"{render(**kw)}\nallow_anonymous false\npassword_file {passwords}\n"))
    with Mosquitto(BrokerParams(port=0, data_dir=tmp_path / "broker")) as running:
        yield running


def _config(broker: Mosquitto, tmp_path: Path, password: str | None) -> BrokerConfig:
    secret = None
    if password is not None:
        secret = tmp_path / "password"
        secret.write_text(f"{password}\n")
    return BrokerConfig(host=broker.host, port=broker.port, username="gw",
                        password_file=secret)


def test_credentials_from_the_config_are_taken(password_broker: Mosquitto,
                                               tmp_path: Path) -> None:
    """The `[broker]` table's username and password file (its newline dropped) log in."""
    # Prepare
    conn = Connection.from_config(_config(password_broker, tmp_path, "s3cret"))
    client = MqttClient(client_id="gw", conn=conn)

    # Execute
    client.connect(10)

    # Assert
    assert client.connected
    assert "s3cret" not in repr(conn)
    client.close()


@pytest.mark.parametrize("password", ["wrong", None])
def test_bad_or_missing_password_is_refused_at_once(password_broker: Mosquitto,
                                                    tmp_path: Path, password: str | None) -> None:
    """A wrong password, or none, is the broker's refusal: broker_refused, not a retry."""
    # Prepare
    client = MqttClient(client_id="gw", conn=Connection.from_config(
        _config(password_broker, tmp_path, password)))

    # Execute
    with pytest.raises(TransportError) as caught:
        client.connect(20)

    # Assert
    assert caught.value.reason is Reason.BROKER_REFUSED
    assert "Not authorized" in caught.value.detail or "Bad user name" in caught.value.detail


def test_unreadable_password_file_is_bad_config(tmp_path: Path) -> None:
    """A password file that is not there is bad_config naming it."""
    # Prepare
    cfg = BrokerConfig(username="gw", password_file=tmp_path / "nothing")

    # Execute
    with pytest.raises(ConfigError) as caught:
        Connection.from_config(cfg)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert "nothing" in caught.value.detail


def test_failover_addresses_come_from_the_config() -> None:
    """`failover = ["HOST:PORT", ...]` in `[broker]`: tried after host:port, in order."""
    # Prepare
    cfg = BrokerConfig(host="127.0.0.1", port=1883,
                       failover=["127.0.0.1:1884", "[::1]:1885"])

    # Execute
    conn = Connection.from_config(cfg)

    # Assert
    assert conn.addresses == (("127.0.0.1", 1883), ("127.0.0.1", 1884), ("::1", 1885))


@pytest.mark.parametrize("entry", ["127.0.0.1", "host:port", "a b:1", ":1883"])
def test_a_bad_failover_entry_is_refused(entry: str) -> None:
    """Anything but HOST:PORT in `failover` fails the config's validation."""
    # Execute
    with pytest.raises(ValueError, match="failover"):
        BrokerConfig(failover=[entry])


@pytest.mark.parametrize(("kw", "detail"), [
    ({"failover": (("127.0.0.1", 0),)}, "port 0"),
    ({"password": "x"}, "without a username"),
])
def test_bad_connection_values_are_bad_config(kw: dict[str, object], detail: str) -> None:
    """A failover port out of range, a password with no username: bad_config."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        Connection(host="127.0.0.1", port=1883, **kw)  # type: ignore[arg-type]

    # Assert
    assert detail in caught.value.detail
