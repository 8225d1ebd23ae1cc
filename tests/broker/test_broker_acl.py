"""The ACL and CRL made from the federation's identities, enforced by a real Mosquitto 2.0.11
on its TLS listener: real certificates, real paho MQTT v5 clients, reason codes as the broker
sends them, and revocation applied by a reload (SIGHUP)."""

from __future__ import annotations

import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from fedstream.broker import BrokerParams, BrokerTls, Mosquitto, broker_pid_file, reload_broker
from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.security.pki import (
    Role,
    acl_path,
    crl_path,
    identities,
    init_ca,
    issue,
    revoke,
)

pytestmark = pytest.mark.mosquitto

P = "fedstream/v1/lab"
WAIT_S = 3.0
SUCCESS, GRANTED_QOS1, NO_SUBSCRIBERS, NOT_AUTHORIZED = 0x00, 0x01, 0x10, 0x87
FLEET = (("cloud", Role.CLOUD), ("e1", Role.EDGE), ("e2", Role.EDGE), ("ops", Role.OPERATOR),
         ("feeder", Role.PRODUCER))


def _make_pki(root: Path) -> Path:
    init_ca(root, "lab")
    issue(root, "broker", Role.BROKER, hosts=("127.0.0.1", "localhost"))
    for name, role in FLEET:
        issue(root, name, role)
    return root


def _broker(pki: Path, data_dir: Path) -> Mosquitto:
    return Mosquitto(BrokerParams(data_dir=data_dir, tls=BrokerTls(
        ca=pki / "ca.crt", cert=pki / "broker.crt", key=pki / "broker.key",
        acl=acl_path(pki), crl=crl_path(pki))))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Federation lab's CA with the broker, a cloud, edges e1 and e2, operator ops and
    producer feeder; its ACL and CRL written by `issue`."""
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A Mosquitto whose TLS listener requires certificates and applies the ACL and CRL."""
    with _broker(pki, tmp_path_factory.mktemp("acl-broker")) as running:
        yield running


class Probe:
    """A raw paho MQTT v5 client over TLS that returns the reason code of each PUBACK and
    SUBACK (which `MqttClient` turns into errors) and queues what it receives.

    Args:
        port: The broker's TLS listener.
        pki: The federation's CA directory.
        name: The identity whose certificate the client shows.
        cert: False: show no certificate at all.
        tls12: Speak TLS 1.2 at most. In TLS 1.3 the server checks the client's certificate
            after the client's side of the handshake is done, so a refusal only shows as the
            connection closing before any CONNACK; in TLS 1.2 it fails the handshake itself,
            naming why (`ssl.SSLError`).
    """

    def __init__(self, port: int, pki: Path, name: str, *, cert: bool = True,
                 tls12: bool = False) -> None:
        self.received: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.closed = threading.Event()
        self._acks: dict[int, Future[ReasonCode]] = {}
        self._lock = threading.Lock()
        self._connack: Future[ReasonCode] = Future()
        self._port = port
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        if tls12:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            context.load_cert_chain(str(pki / f"{name}.crt"), str(pki / f"{name}.key"))
        # No reconnecting: a refused probe stays refused, and `close` need not wait out paho's
        # reconnect delay.
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5,
                                  client_id=f"{name}-{uuid.uuid4().hex[:6]}",
                                  reconnect_on_failure=False)
        self.client.tls_set_context(context)
        self.client.on_connect = self._on_connect
        self.client.on_publish = lambda _c, _u, mid, code, _p: self._ack(mid).set_result(code)
        self.client.on_subscribe = (
            lambda _c, _u, mid, codes, _p: self._ack(mid).set_result(codes[0]))
        self.client.on_message = lambda _c, _u, msg: self.received.put(msg)
        self.client.on_disconnect = self._on_disconnect

    def connect(self) -> Probe:
        """Connect and await the CONNACK, which must accept the session."""
        self.start()
        assert not self._connack.result(WAIT_S).is_failure
        return self

    def start(self) -> None:
        """Open the connection and send CONNECT, raising what paho raises (a TLS 1.2 handshake
        the broker refuses is an `ssl.SSLError`)."""
        self.client.connect("127.0.0.1", self._port)
        self.client.loop_start()

    def closed_before_connack(self) -> bool:
        """After `start`: True once the broker closed the connection without any CONNACK."""
        return self.closed.wait(WAIT_S) and not self._connack.done()

    def publish(self, topic: str, payload: bytes = b"x", *, retain: bool = False) -> int:
        """Publish at QoS 1; the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return self._ack(info.mid).result(WAIT_S).value

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1; the SUBACK's reason code."""
        mid = self.client.subscribe(topic, qos=1)[1]
        assert mid is not None
        return self._ack(mid).result(WAIT_S).value

    def next_topic(self) -> str:
        """The topic of the next message received."""
        return self.received.get(timeout=WAIT_S).topic

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def _ack(self, mid: int) -> Future[ReasonCode]:
        # The acknowledgement may arrive before `publish` returns its mid: either side makes it.
        with self._lock:
            return self._acks.setdefault(mid, Future())

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, _code: ReasonCode,
                       _p: object) -> None:
        self.closed.set()

    def _on_connect(self, _c: paho.Client, _u: object, _f: object, code: ReasonCode,
                    _p: object) -> None:
        if not self._connack.done():
            self._connack.set_result(code)


@pytest.fixture
def client(pki: Path, secured: Mosquitto) -> Iterator[Callable[[str], Probe]]:
    """Connects a `Probe` with an identity's certificate to the TLS listener; all closed after."""
    made: list[Probe] = []

    def connect(name: str) -> Probe:
        probe = Probe(secured.tls_port, pki, name)
        made.append(probe)
        return probe.connect()

    yield connect
    for probe in made:
        probe.close()


def _nothing_arrived(probe: Probe) -> bool:
    """True if `probe` holds no message that was published before this call.

    A message the broker delivers to a client is sent before the PUBACK of any publish the
    client makes after it, on the same connection: the PUBACK of a QoS 1 publish (allowed or
    not) is the barrier, no waiting on a clock.
    """
    probe.publish(f"{P}/barrier/{uuid.uuid4().hex}")
    return probe.received.empty()


def test_a_tls_client_without_a_certificate_never_gets_a_session(
        pki: Path, secured: Mosquitto) -> None:
    """A client that trusts the CA but shows no certificate of its own is refused: in TLS 1.3
    the broker closes the connection before any CONNACK; in TLS 1.2 the handshake fails."""
    # Prepare
    tls13 = Probe(secured.tls_port, pki, "anonymous", cert=False)
    tls12 = Probe(secured.tls_port, pki, "anonymous", cert=False, tls12=True)

    # Execute
    tls13.start()
    with pytest.raises(ssl.SSLError) as info:
        tls12.start()

    # Assert
    assert tls13.closed_before_connack()
    assert "handshake failure" in str(info.value)
    tls13.close()


@pytest.mark.parametrize(("name", "topic"), [
    ("e1", f"{P}/update/m/e1"), ("e1", f"{P}/edge/e1/status"),
    ("cloud", f"{P}/model/m/manifest"), ("cloud", f"{P}/round/m"),
    ("cloud", f"{P}/receipt/e1"), ("cloud", f"{P}/reply/ops"),
    ("ops", f"{P}/cmd/status"), ("feeder", f"{P}/data/m"), ("feeder", f"{P}/infer/m"),
])
def test_each_identity_may_publish_on_its_own_topics(
        client: Callable[[str], Probe], name: str, topic: str) -> None:
    """The PUBACK of a publish the ACL allows is a success: 0x10 (no matching subscribers)
    where nobody subscribes, as here, and 0x00 where somebody does."""
    # Prepare
    probe = client(name)

    # Execute
    code = probe.publish(topic)

    # Assert
    assert code in (NO_SUBSCRIBERS, SUCCESS)


@pytest.mark.parametrize(("name", "topic"), [
    ("e1", f"{P}/update/m/e2"), ("e1", f"{P}/edge/e2/status"), ("e1", f"{P}/cmd/status"),
    ("e1", f"{P}/model/m/manifest"), ("e1", f"{P}/receipt/e1"),
    ("e1", "fedstream/v1/other/update/m/e1"), ("e1", "sensors/e1"),
    ("ops", f"{P}/update/m/e1"), ("ops", f"{P}/reply/ops"), ("feeder", f"{P}/cmd/status"),
    ("feeder", f"{P}/data/m/more"), ("cloud", f"{P}/update/m/e1"), ("cloud", f"{P}/cmd/status"),
])
def test_a_publish_outside_an_identitys_topics_gets_not_authorized(
        client: Callable[[str], Probe], name: str, topic: str) -> None:
    """Mosquitto 2.0.11 answers a QoS 1 publish the ACL denies with PUBACK reason code 0x87
    (not authorized) to an MQTT v5 client, and keeps the session open."""
    # Prepare
    probe = client(name)

    # Execute
    code = probe.publish(topic)

    # Assert
    assert code == NOT_AUTHORIZED
    assert probe.client.is_connected()


def test_an_edges_update_reaches_the_cloud_and_a_forged_one_does_not(
        client: Callable[[str], Probe]) -> None:
    """e1's chunk on its own update topic is delivered to the cloud; e1's chunk on e2's topic
    is refused with 0x87 and never delivered."""
    # Prepare
    cloud, e1 = client("cloud"), client("e1")
    assert cloud.subscribe(f"{P}/update/#") == GRANTED_QOS1

    # Execute
    forged = e1.publish(f"{P}/update/forged/e2", b"forged")
    own = e1.publish(f"{P}/update/m/e1", b"chunk")

    # Assert
    assert (forged, own) == (NOT_AUTHORIZED, SUCCESS)
    msg = cloud.received.get(timeout=WAIT_S)
    assert (msg.topic, msg.payload) == (f"{P}/update/m/e1", b"chunk")
    assert _nothing_arrived(cloud)


def test_an_edge_subscribed_to_another_edges_receipts_receives_none(
        client: Callable[[str], Probe]) -> None:
    """Mosquitto 2.0's ACL file grants every SUBSCRIBE (SUBACK 0x01) and checks read access
    per delivered message: e1 subscribed to e2's receipts gets only its own."""
    # Prepare
    cloud, e1, e2 = client("cloud"), client("e1"), client("e2")
    codes = [e1.subscribe(f"{P}/receipt/e2"), e1.subscribe(f"{P}/receipt/e1"),
             e2.subscribe(f"{P}/receipt/e2")]

    # Execute
    sent = [cloud.publish(f"{P}/receipt/e2"), cloud.publish(f"{P}/receipt/e1")]

    # Assert
    assert codes == [GRANTED_QOS1] * 3
    assert sent == [SUCCESS, SUCCESS]
    # e2's receipt went out first: had e1 been given it, it would have come before its own.
    assert e1.next_topic() == f"{P}/receipt/e1"
    assert e2.next_topic() == f"{P}/receipt/e2"
    assert _nothing_arrived(e1)


def test_an_operators_command_reaches_the_cloud_and_only_it_reads_the_reply(
        client: Callable[[str], Probe]) -> None:
    """The operator may publish a command, an edge may not; the cloud's reply on
    `reply/ops/<session>` reaches the operator, not an edge, and a reply on a topic named by
    a bare client id (no identity level) reaches nobody."""
    # Prepare
    cloud, ops, e1 = client("cloud"), client("ops"), client("e1")
    cloud.subscribe(f"{P}/cmd/#")
    ops.subscribe(f"{P}/reply/#")
    e1.subscribe(f"{P}/reply/#")

    # Execute
    by_edge = e1.publish(f"{P}/cmd/stop", b"edge")
    by_operator = ops.publish(f"{P}/cmd/status", b"ops")
    command = cloud.received.get(timeout=WAIT_S)
    replies = [cloud.publish(f"{P}/reply/fedstream-cli-0a1b2c3d"),
               cloud.publish(f"{P}/reply/ops/s1"), cloud.publish(f"{P}/reply/ops")]

    # Assert
    assert (by_edge, by_operator) == (NOT_AUTHORIZED, SUCCESS)
    assert (command.topic, command.payload) == (f"{P}/cmd/status", b"ops")
    assert replies == [SUCCESS] * 3
    assert [ops.next_topic(), ops.next_topic()] == [f"{P}/reply/ops/s1", f"{P}/reply/ops"]
    assert _nothing_arrived(ops)
    assert _nothing_arrived(e1)


def test_the_cloud_publishes_and_clears_a_retained_model_edges_read(
        client: Callable[[str], Probe]) -> None:
    """The cloud's retained manifest reaches an edge subscribing later; clearing it (an
    empty retained publish) is allowed too."""
    # Prepare
    cloud, e1 = client("cloud"), client("e1")
    published = cloud.publish(f"{P}/model/retained/manifest", b"v1", retain=True)

    # Execute
    e1.subscribe(f"{P}/model/retained/#")
    msg = e1.received.get(timeout=WAIT_S)
    cleared = cloud.publish(f"{P}/model/retained/manifest", b"", retain=True)

    # Assert
    assert published in (NO_SUBSCRIBERS, SUCCESS)
    assert cleared == SUCCESS
    assert (msg.topic, msg.payload, msg.retain) == (f"{P}/model/retained/manifest", b"v1", True)


def test_a_revoked_edge_can_do_nothing_and_cannot_come_back(tmp_path: Path) -> None:
    """After `revoke` and a reload (SIGHUP), e1's open session stays connected but may not
    publish (0x87) and is delivered nothing; a new connection with its certificate is refused
    (Mosquitto 2.0.11 reads the CRL again on SIGHUP: TLS 1.2 names "certificate revoked", TLS
    1.3 closes before any CONNACK); e2, connected or new, is unaffected."""
    # Prepare
    pki = _make_pki(tmp_path / "pki")
    with _broker(pki, tmp_path / "broker") as broker:
        probes = [Probe(broker.tls_port, pki, n).connect() for n in ("cloud", "e1", "e2")]
        cloud, e1, e2 = probes
        cloud.subscribe(f"{P}/update/#")
        e1.subscribe(f"{P}/receipt/e1")
        before = e1.publish(f"{P}/update/m/e1")
        assert cloud.next_topic() == f"{P}/update/m/e1"

        # Execute
        revoked = revoke(pki, "e1")
        broker.reload()
        after = e1.publish(f"{P}/update/m/e1")
        cloud.publish(f"{P}/receipt/e1")
        nothing_for_e1 = _nothing_arrived(e1)
        e2_code = e2.publish(f"{P}/update/m/e2")
        with pytest.raises(ssl.SSLError) as refused:
            Probe(broker.tls_port, pki, "e1", tls12=True).start()
        tls13 = Probe(broker.tls_port, pki, "e1")
        tls13.start()
        closed = tls13.closed_before_connack()
        e2_again = Probe(broker.tls_port, pki, "e2").connect()
        e2_connects = e2_again.client.is_connected()
        e1_still_open = e1.client.is_connected()
        for probe in (*probes, tls13, e2_again):
            probe.close()

    # Assert
    assert revoked is True
    assert [i.name for i in identities(pki) if i.revoked] == ["e1"]
    assert (before, after, e2_code) == (SUCCESS, NOT_AUTHORIZED, SUCCESS)
    assert nothing_for_e1
    assert cloud.next_topic() == f"{P}/update/m/e2"
    assert "certificate revoked" in str(refused.value)
    assert closed
    assert e2_connects
    assert e1_still_open


def test_reload_broker_signals_only_a_running_mosquitto(
        secured: Mosquitto, tmp_path: Path) -> None:
    """`reload_broker` is True for the broker's own pid file, False for a missing pid file,
    one that is not a number, and one naming a live process that is not Mosquitto."""
    # Prepare
    not_a_pid, not_mosquitto = tmp_path / "garbage.pid", tmp_path / "python.pid"
    not_a_pid.write_text("mosquitto\n")
    not_mosquitto.write_text(f"{os.getpid()}\n")

    # Execute
    got = [reload_broker(secured.pid_file), reload_broker(tmp_path / "missing.pid"),
           reload_broker(not_a_pid), reload_broker(not_mosquitto)]

    # Assert
    assert got == [True, False, False, False]
    assert secured.pid_file.read_text().strip() == str(secured.pid)


def test_a_missing_acl_or_crl_is_named_before_mosquitto_starts(pki: Path, tmp_path: Path) -> None:
    """A TLS listener given an ACL or CRL file that is not there fails with BAD_CONFIG naming
    it, rather than with Mosquitto's exit code."""
    # Prepare
    tls = BrokerTls(ca=pki / "ca.crt", cert=pki / "broker.crt", key=pki / "broker.key",
                    acl=tmp_path / "acl", crl=crl_path(pki))
    broker = Mosquitto(BrokerParams(data_dir=tmp_path / "data", tls=tls))

    # Execute
    with pytest.raises(ConfigError, match=str(tmp_path / "acl")) as info:
        broker.start()

    # Assert
    assert info.value.reason is Reason.BAD_CONFIG
    assert broker.pid is None


def test_broker_run_with_pki_serves_its_acl_and_crl_and_keeps_its_pid_file_there(
        tmp_path: Path) -> None:
    """`fedstream broker run --pki DIR` applies DIR's ACL (an edge's command is 0x87) and CRL
    (an edge revoked before the start is refused), and writes its pid file where
    `broker_pid_file(DIR)` says, for `reload_broker`; a clean stop removes it."""
    # Prepare
    pki = _make_pki(tmp_path / "pki")
    revoke(pki, "e2")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstream", "broker", "run", "--port", "0", "--tls-port", "0",
         "--data-dir", str(tmp_path / "data"), "--pki", str(pki)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        found = re.search(r"TLS with client certificates on 127\.0\.0\.1:(\d+)", banner)
        assert found, banner
        port = int(found.group(1))

        # Execute
        e1 = Probe(port, pki, "e1").connect()
        codes = [e1.publish(f"{P}/update/m/e1"), e1.publish(f"{P}/cmd/status")]
        e1.close()
        with pytest.raises(ssl.SSLError) as refused:
            Probe(port, pki, "e2", tls12=True).start()
        pid = broker_pid_file(pki).read_text().strip()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        reloaded = reload_broker(broker_pid_file(pki))
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(WAIT_S * 2)
    finally:
        proc.kill()

    # Assert
    assert codes[0] in (NO_SUBSCRIBERS, SUCCESS)
    assert codes[1] == NOT_AUTHORIZED
    assert "certificate revoked" in str(refused.value)
    assert (comm, reloaded, returncode) == ("mosquitto", True, 0)
    assert not broker_pid_file(pki).exists()
