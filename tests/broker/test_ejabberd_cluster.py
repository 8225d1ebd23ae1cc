"""Tests for fedstream.broker.ejabberd: a real two-node ejabberd cluster on loopback, and what
an MQTT v5 client of it can count on, before and after one node is killed."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fedstream.broker import ejabberd
from fedstream.broker.ejabberd import EjabberdCluster, EjabberdNode, EjabberdParams
from fedstream.shared.errors import ConfigError, Reason, TransportError

WAIT_S = 5.0
NOT_AUTHORIZED = 135
QUOTA_EXCEEDED = 151

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ejabberdctl") is None
                       and not Path("/usr/sbin/ejabberdctl").exists(),
                       reason="ejabberd is not installed (apt-get install -y ejabberd)"),
]


def next_second() -> None:
    """Wait for the wall clock's next second. ejabberd 23.01 orders two registrations of one
    client id (session, subscription) by `{seconds, per-VM counter}`: between nodes within
    one second the newer may lose, so a test moves a client only in a later second, as a real
    client (connected for longer than that) does. The clock is the event here."""
    time.sleep(1.01 - time.time() % 1)


def prop(props: Properties | None, name: str) -> object:
    """An MQTT v5 property of a received packet (paho sets them as attributes), or None."""
    return getattr(props, name, None)


def measured(what: str, **values: float | int | str) -> None:
    """Print one measurement as a JSON line (shown with `pytest -s`); nothing asserts on it."""
    print(json.dumps({"measure": what, **values}))


class Peer:
    """A paho MQTT v5 client of one node that records what it receives.

    Args:
        node: The node to connect to.
        params: The cluster's params (the registered username and password).
        client_id: The MQTT client id (the session's key); random by default.
        credentials: False: send no username or password.
        password: A password other than the registered one.
        persistent: Clean start off and a one-hour session expiry.
        manual_ack: Never acknowledge a received QoS 1 message.
    """

    def __init__(self, node: EjabberdNode, params: EjabberdParams, *,
                 client_id: str | None = None, credentials: bool = True,
                 password: str | None = None, persistent: bool = False,
                 manual_ack: bool = False) -> None:
        self.node = node
        self.received: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.closed: Future[ReasonCode] = Future()
        self.connack: Future[tuple[ReasonCode, bool, Properties | None]] = Future()
        self._acks: dict[int, Future[list[ReasonCode]]] = {}
        self._lock = threading.Lock()
        self._persistent = persistent
        self.client_id = client_id or f"peer-{uuid.uuid4().hex[:8]}"
        # No reconnecting: a test moves a client to another node itself, with a new Peer.
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5,
                                  client_id=self.client_id,
                                  reconnect_on_failure=False, manual_ack=manual_ack)
        if credentials:
            self.client.username_pw_set(params.username, password or params.password)
        self.client.on_connect = self._on_connect
        self.client.on_publish = lambda _c, _u, mid, code, _p: self._ack(mid).set_result([code])
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self._ack(mid).set_result(codes)
        self.client.on_message = lambda _c, _u, msg: self.received.put(msg)
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> tuple[ReasonCode, bool, Properties | None]:
        """Connect; the CONNACK's reason code, session-present flag and properties."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600 if self._persistent else 0
        self.client.connect(self.node.host, self.node.mqtt_port,
                            clean_start=not self._persistent, properties=props)
        self.client.loop_start()
        return self.connack.result(WAIT_S)

    def connect(self) -> Peer:
        """Connect, and require the session to be accepted."""
        code, _present, _props = self.start()
        assert not code.is_failure, code
        return self

    def subscribe(self, topic: str) -> int:
        """Subscribe at QoS 1; the SUBACK's reason code."""
        mid = self.client.subscribe(topic, qos=1)[1]
        assert mid is not None
        return self._ack(mid).result(WAIT_S)[0].value

    def publish(self, topic: str, payload: bytes = b"x", *, retain: bool = False,
                properties: Properties | None = None) -> int:
        """Publish at QoS 1; the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        return self._ack(info.mid).result(WAIT_S)[0].value

    def next(self) -> paho.MQTTMessage:
        """The next message received."""
        return self.received.get(timeout=WAIT_S)

    def drained(self) -> list[bytes]:
        """Payloads of every message that reached this client before a fence of its own.

        The fence is a QoS 1 message to a topic only this client subscribes to: ejabberd puts
        it in this session's queue behind anything already routed to it, so whatever has not
        come before the fence was never sent (no waiting on a clock).
        """
        fence = f"fence/{uuid.uuid4().hex}"
        assert self.subscribe(fence) == 1
        assert self.publish(fence, b"fence") == 0
        payloads = []
        while (msg := self.next()).topic != fence:
            payloads.append(bytes(msg.payload))
        return payloads

    def close(self) -> None:
        """Disconnect (if still connected) and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def _ack(self, mid: int) -> Future[list[ReasonCode]]:
        # The acknowledgement may arrive before the call returns its mid: either side makes it.
        with self._lock:
            return self._acks.setdefault(mid, Future())

    def _on_connect(self, _c: paho.Client, _u: object, flags: paho.ConnectFlags,
                    code: ReasonCode, props: Properties | None) -> None:
        if not self.connack.done():
            self.connack.set_result((code, flags.session_present, props))

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, code: ReasonCode,
                       _p: object) -> None:
        if not self.closed.done():
            self.closed.set_result(code)


class Peers:
    """Makes `Peer`s for one cluster and closes them all at the end."""

    def __init__(self, cluster: EjabberdCluster, params: EjabberdParams) -> None:
        self.cluster = cluster
        self.params = params
        self._made: list[Peer] = []

    def new(self, i: int, **kwargs: object) -> Peer:
        """An unconnected Peer of node i (kwargs as for `Peer`)."""
        peer = Peer(self.cluster.nodes[i], self.params, **kwargs)  # type: ignore[arg-type]
        self._made.append(peer)
        return peer

    def on(self, i: int, **kwargs: object) -> Peer:
        """A Peer connected to node i."""
        return self.new(i, **kwargs).connect()

    def close(self) -> None:
        """Close every Peer made."""
        for peer in self._made:
            peer.close()


@pytest.fixture
def topic() -> str:
    """A topic prefix unique to one test."""
    return f"fedstream-test/{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def params(tmp_path_factory: pytest.TempPathFactory) -> EjabberdParams:
    """The shared cluster's params: defaults, in a fresh directory."""
    return EjabberdParams(work_dir=tmp_path_factory.mktemp("ejabberd"))


@pytest.fixture(scope="module")
def cluster(params: EjabberdParams) -> Iterator[EjabberdCluster]:
    """Two joined nodes shared by the tests that kill nothing."""
    began = time.monotonic()
    with EjabberdCluster(params) as running:
        measured("cluster_startup", seconds=round(time.monotonic() - began, 3))
        yield running


@pytest.fixture
def peers(cluster: EjabberdCluster, params: EjabberdParams) -> Iterator[Peers]:
    """Clients of the shared cluster, closed after the test."""
    made = Peers(cluster, params)
    yield made
    made.close()


def test_nodes_are_distinct_loopback_nodes(cluster: EjabberdCluster) -> None:
    """Each node has its own name (with the cluster's random part), loopback port and VM, and
    `connection` names the others as failover."""
    # Execute
    first, second = cluster.nodes
    conn = cluster.connection(0)

    # Assert
    assert first.name.startswith("fs1_") and second.name.startswith("fs2_")
    assert first.name.split("@")[0][4:] == second.name.split("@")[0][4:]
    assert (first.host, second.host) == ("127.0.0.1", "127.0.0.1")
    assert first.mqtt_port != second.mqtt_port and first.pid != second.pid
    assert all(Path(f"/proc/{n.pid}/exe").resolve().name == "beam.smp" for n in cluster.nodes)
    assert (conn.port, conn.failover, conn.username) == (
        first.mqtt_port, (("127.0.0.1", second.mqtt_port),), "fedstream")


def test_qos1_message_published_on_node1_reaches_subscriber_on_node2(
        peers: Peers, topic: str) -> None:
    """A QoS 1 publish on node 1 is acknowledged and delivered, at QoS 1, to node 2."""
    # Prepare
    subscriber = peers.on(1)
    assert subscriber.subscribe(f"{topic}/a") == 1
    publisher = peers.on(0)

    # Execute
    began = time.monotonic()
    code = publisher.publish(f"{topic}/a", b"update-1")
    msg = subscriber.next()
    measured("cross_node_qos1_latency", ms=round((time.monotonic() - began) * 1000, 2))

    # Assert
    assert code == 0
    assert (msg.topic, msg.payload, msg.qos) == (f"{topic}/a", b"update-1", 1)


def test_retained_message_published_on_node1_is_not_served_by_node2(
        peers: Peers, topic: str) -> None:
    """ejabberd 23.01 replicates a retained message to node 2's table, but each node matches
    new subscriptions against a topic cache of its own, filled at start and by its own
    publishes: a new subscriber on node 2 gets nothing, one on node 1 gets the message. A
    subscriber already there when it is published gets it live, on either node."""
    # Prepare
    live = peers.on(1)
    live.subscribe(f"{topic}/model")
    assert peers.on(0).publish(f"{topic}/model", b"weights-v1", retain=True) == 0
    # 0x10, no matching subscribers: how ejabberd acknowledges a retained message nobody reads
    assert peers.on(1).publish(f"{topic}/local", b"weights-v2", retain=True) == 16
    on_node1, on_node2 = peers.on(0), peers.on(1)

    # Execute
    on_node1.subscribe(f"{topic}/model")
    on_node2.subscribe(f"{topic}/model")
    on_node2.subscribe(f"{topic}/local")

    # Assert
    assert live.drained() == [b"weights-v1"]
    assert on_node1.drained() == [b"weights-v1"]
    assert on_node2.drained() == [b"weights-v2"]


@pytest.mark.parametrize("how", ["no credentials", "wrong password"])
@pytest.mark.parametrize("i", [0, 1])
def test_client_without_valid_credentials_is_refused(peers: Peers, how: str, i: int) -> None:
    """A CONNECT without the registered user's password gets CONNACK 0x87, on either node."""
    # Prepare
    peer = (peers.new(i, credentials=False) if how == "no credentials"
            else peers.new(i, password="not-the-password"))

    # Execute
    code, present, _props = peer.start()

    # Assert
    assert (code.value, str(code), present) == (NOT_AUTHORIZED, "Not authorized", False)


def test_response_topic_and_correlation_data_cross_nodes(peers: Peers, topic: str) -> None:
    """A request's MQTT v5 response topic and correlation data reach node 2 unchanged, and
    the reply sent there back to the response topic reaches the requester on node 1."""
    # Prepare
    server, requester = peers.on(1), peers.on(0)
    server.subscribe(f"{topic}/cmd")
    requester.subscribe(f"{topic}/reply")
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = f"{topic}/reply"
    props.CorrelationData = b"\x00req-7"

    # Execute
    requester.publish(f"{topic}/cmd", b"status?", properties=props)
    request = server.next()
    answer = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    answer.CorrelationData = prop(request.properties, "CorrelationData")
    server.publish(str(prop(request.properties, "ResponseTopic")), b"ok", properties=answer)
    reply = requester.next()

    # Assert
    assert (prop(request.properties, "ResponseTopic"),
            prop(request.properties, "CorrelationData")) == (f"{topic}/reply", b"\x00req-7")
    assert (reply.payload, prop(reply.properties, "CorrelationData")) == (b"ok", b"\x00req-7")


@pytest.mark.parametrize("size", [300_000, 1024 * 1024])
def test_large_payload_crosses_nodes_intact(peers: Peers, topic: str, size: int) -> None:
    """A 300 KB and a 1 MiB QoS 1 payload published on node 1 arrive whole on node 2."""
    # Prepare
    payload = os.urandom(size)
    subscriber = peers.on(1)
    subscriber.subscribe(f"{topic}/blob")
    publisher = peers.on(0)

    # Execute
    began = time.monotonic()
    code = publisher.publish(f"{topic}/blob", payload)
    msg = subscriber.next()
    measured("cross_node_payload", bytes=size, ms=round((time.monotonic() - began) * 1000, 1))

    # Assert
    assert code == 0
    assert msg.payload == payload


def test_packet_over_max_payload_size_closes_the_publishers_connection(
        peers: Peers, params: EjabberdParams, topic: str) -> None:
    """A PUBLISH bigger than `max_payload_size` gets no PUBACK: the node sends DISCONNECT
    0x95 (packet too large), closes the connection and routes nothing."""
    # Prepare
    subscriber = peers.on(1)
    subscriber.subscribe(f"{topic}/blob")
    publisher = peers.on(0)

    # Execute
    publisher.client.publish(f"{topic}/blob", bytes(params.max_payload_size + 1), qos=1)
    code = publisher.closed.result(WAIT_S)

    # Assert
    assert (code.value, str(code)) == (149, "Packet too large")
    assert subscriber.drained() == []


def test_qos1_stream_crosses_nodes_complete_and_in_order(peers: Peers, topic: str) -> None:
    """500 QoS 1 messages of 1 KiB published on node 1 reach a subscriber on node 2, all of
    them and in order (ejabberd keeps one QoS 1 message in flight per subscriber)."""
    # Prepare
    subscriber = peers.on(1)
    subscriber.subscribe(f"{topic}/chunk")
    publisher = peers.on(0)
    sent = [i.to_bytes(4, "big") + bytes(1020) for i in range(500)]

    # Execute
    began = time.monotonic()
    infos = [publisher.client.publish(f"{topic}/chunk", body, qos=1) for body in sent]
    got = [subscriber.next().payload for _ in sent]
    seconds = time.monotonic() - began
    measured("cross_node_qos1_stream", messages=len(sent), per_s=round(len(sent) / seconds))

    # Assert
    assert got == sent
    for info in infos:
        info.wait_for_publish(WAIT_S)
    assert all(info.is_published() for info in infos)


def test_persistent_session_moves_to_the_other_live_node(peers: Peers, topic: str) -> None:
    """A persistent session made on node 1 resumes on node 2 while node 1 runs: session
    present, the QoS 1 message queued while away delivered, the subscription kept."""
    # Prepare
    away = peers.new(0, client_id=f"edge-{uuid.uuid4().hex[:6]}", persistent=True).connect()
    away.subscribe(f"{topic}/round")
    away.close()
    publisher = peers.on(0)
    publisher.publish(f"{topic}/round", b"while-away")
    next_second()

    # Execute
    back = peers.new(1, client_id=away.client_id, persistent=True)
    code, present, props = back.start()
    queued = back.drained()
    publisher.publish(f"{topic}/round", b"after")

    # Assert
    assert (code.value, present) == (0, True)
    assert prop(props, "SessionExpiryInterval") == 3600
    assert queued == [b"while-away"]
    assert back.drained() == [b"after"]
    assert not back.closed.done()


def test_rendered_ejabberdctl_cfg_reaches_the_running_node(cluster: EjabberdCluster,
                                                           params: EjabberdParams) -> None:
    """`ejabberdctl --ctl-config <node dir>/ejabberdctl.cfg` talks to the node it was
    rendered for (the way to poke at a node by hand)."""
    # Prepare
    if os.geteuid() != 0:
        pytest.skip("ejabberdctl runs only as root or as the ejabberd user")
    cfg = params.work_dir / "fs2" / "ejabberdctl.cfg"

    # Execute
    res = subprocess.run(["ejabberdctl", "--ctl-config", str(cfg), "list_cluster"],
                         capture_output=True, text=True, timeout=60, check=False)

    # Assert
    assert res.returncode == 0, res.stdout + res.stderr
    assert set(res.stdout.split()) == {n.name for n in cluster.nodes}


def test_missing_ejabberd_is_a_config_error_naming_the_package(tmp_path: Path) -> None:
    """Without ejabberd's control script start fails at once, says how to install it, and
    leaves nothing running."""
    # Prepare
    cluster = EjabberdCluster(EjabberdParams(work_dir=tmp_path,
                                             ejabberdctl=str(tmp_path / "no-ejabberdctl")))

    # Execute
    with pytest.raises(ConfigError) as caught:
        cluster.start()

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG
    assert "apt-get install -y ejabberd" in caught.value.detail
    assert cluster.nodes == ()


@pytest.mark.parametrize("bad", [{"nodes": 0}, {"username": "Fed Stream"}, {"password": ""},
                                 {"max_queue": 0}, {"queue_type": "disk"}])
def test_bad_params_raise_config_error(tmp_path: Path, bad: dict[str, object]) -> None:
    """Out-of-range params are refused when they are built."""
    # Execute
    with pytest.raises(ConfigError) as caught:
        EjabberdParams(work_dir=tmp_path, **bad)

    # Assert
    assert caught.value.reason is Reason.BAD_CONFIG


def test_full_queue_drops_the_session_and_everything_queued(tmp_path: Path) -> None:
    """With `max_queue=3`, a subscriber that leaves its QoS 1 message unacknowledged holds one
    in flight and three queued; the fifth message ends its session (DISCONNECT 0x97, quota
    exceeded) and the queue with it."""
    # Prepare
    params = EjabberdParams(work_dir=tmp_path, nodes=1, max_queue=3)
    with EjabberdCluster(params) as cluster:
        made = Peers(cluster, params)
        slow = made.new(0, client_id="slow-edge", persistent=True, manual_ack=True).connect()
        slow.subscribe("model/#")
        publisher = made.on(0)

        # Execute
        codes = [publisher.publish("model/chunk", b"%d" % i) for i in range(5)]
        closed = slow.closed.result(WAIT_S)
        back = made.new(0, client_id="slow-edge", persistent=True)
        _code, present, _props = back.start()
        made.close()

    # Assert
    assert codes == [0] * 5
    assert (closed.value, str(closed)) == (QUOTA_EXCEEDED, "Quota exceeded")
    assert slow.next().payload == b"0"
    assert slow.received.empty()
    assert present is False


def _cluster_processes(cluster_id: str) -> list[int]:
    """Live processes carrying the cluster's marker (`FEDSTREAM_EJABBERD_CLUSTER=<id>`)."""
    mark = f"FEDSTREAM_EJABBERD_CLUSTER={cluster_id}".encode()
    found = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in env.read_bytes().split(b"\0"):
                found.append(int(env.parent.name))
        except OSError:
            continue
    return found


@pytest.mark.chaos
def test_stop_after_a_kill_reaps_every_process(tmp_path: Path) -> None:
    """After `kill(0)` and `stop()` no process the cluster started is left: not the VMs, not
    their port programs, not the cluster's own epmd."""
    # Prepare
    cluster = EjabberdCluster(EjabberdParams(work_dir=tmp_path))
    cluster.start()
    cluster_id = cluster.nodes[0].name.split("@")[0].removeprefix("fs1_")
    before = _cluster_processes(cluster_id)
    pids = [n.pid for n in cluster.nodes]

    # Execute
    cluster.kill(0)
    began = time.monotonic()
    cluster.stop()
    measured("cluster_stop", ms=round((time.monotonic() - began) * 1000))

    # Assert
    assert set(pids) < set(before) and len(before) > len(pids) + 1
    assert _cluster_processes(cluster_id) == []
    assert cluster.nodes == ()


@dataclass
class AfterKill:
    """A cluster whose node 1 was killed, and what was set up on it before."""

    cluster: EjabberdCluster
    peers: Peers
    topic: str
    survivor: Peer  # connected to node 2 since before the kill, subscribed to topic/live
    orphan: Peer  # was connected to node 1, subscribed to topic/live
    away_on_node1: str  # client id of a persistent session left on node 1, one message queued
    away_on_node2: str  # client id of a persistent session left on node 2, one message queued


@pytest.fixture(scope="module")
def after_kill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AfterKill]:
    """A fresh cluster with sessions, queued and retained messages on both nodes; then
    `kill(0)`, measured up to the moment node 1's client sees its connection drop."""
    params = EjabberdParams(work_dir=tmp_path_factory.mktemp("ejabberd-chaos"))
    topic = f"fedstream-test/{uuid.uuid4().hex[:12]}"
    began = time.monotonic()
    with EjabberdCluster(params) as cluster:
        measured("cluster_startup", seconds=round(time.monotonic() - began, 3))
        made = Peers(cluster, params)
        away = {i: f"away{i}-{uuid.uuid4().hex[:6]}" for i in (0, 1)}
        for i, client_id in away.items():
            session = made.new(i, client_id=client_id, persistent=True).connect()
            session.subscribe(f"{topic}/away{i}")
            session.close()
        publisher = made.on(0)
        for i in away:
            publisher.publish(f"{topic}/away{i}", b"queued-on-node%d" % (i + 1))
        publisher.publish(f"{topic}/retained1", b"via-node1", retain=True)
        made.on(1).publish(f"{topic}/retained2", b"via-node2", retain=True)
        survivor, orphan = made.on(1), made.on(0, client_id=f"orphan-{uuid.uuid4().hex[:6]}")
        survivor.subscribe(f"{topic}/live")
        orphan.subscribe(f"{topic}/live")
        next_second()

        began = time.monotonic()
        cluster.kill(0)
        orphan.closed.result(WAIT_S)
        measured("kill_noticed_by_client", ms=round((time.monotonic() - began) * 1000, 1))
        yield AfterKill(cluster, made, topic, survivor, orphan, away[0], away[1])
        made.close()


@pytest.mark.chaos
def test_client_of_node2_keeps_working_after_node1_is_killed(after_kill: AfterKill) -> None:
    """A client connected to node 2 before the kill stays connected and keeps receiving what
    node 2's clients publish."""
    # Prepare
    publisher = after_kill.peers.on(1)

    # Execute
    code = publisher.publish(f"{after_kill.topic}/live", b"round-2")

    # Assert
    assert code == 0
    assert after_kill.survivor.next().payload == b"round-2"
    assert not after_kill.survivor.closed.done()


@pytest.mark.chaos
def test_client_of_the_killed_node_reconnects_to_node2(after_kill: AfterKill) -> None:
    """The client that lost node 1 connects to node 2 under the same client id, subscribes
    again and gets what is published there."""
    # Prepare
    lost = after_kill.orphan
    publisher = after_kill.peers.on(1)

    # Execute
    began = time.monotonic()
    moved = after_kill.peers.new(1, client_id=lost.client_id)
    code, _present, _props = moved.start()
    moved.subscribe(f"{after_kill.topic}/live")
    publisher.publish(f"{after_kill.topic}/live", b"round-3")
    msg = moved.next()
    measured("failover_reconnect", ms=round((time.monotonic() - began) * 1000, 1))

    # Assert
    assert lost.closed.done()
    assert code.value == 0
    assert msg.payload == b"round-3"


@pytest.mark.chaos
def test_persistent_session_of_the_killed_node_is_gone(after_kill: AfterKill) -> None:
    """A persistent session held by node 1 does not survive it: on node 2 the same client id
    gets a new session (not present), no queued message and no subscription: a publish to
    its old topic gets PUBACK 0x10, no matching subscribers (the filter index is per node)."""
    # Prepare
    back = after_kill.peers.new(1, client_id=after_kill.away_on_node1, persistent=True)

    # Execute
    code, present, _props = back.start()
    queued = back.drained()
    republished = after_kill.peers.on(1).publish(f"{after_kill.topic}/away0", b"again")

    # Assert
    assert (code.value, present) == (0, False)
    assert queued == []
    assert republished == 16
    assert back.drained() == []


@pytest.mark.chaos
def test_persistent_session_of_node2_keeps_its_queue(after_kill: AfterKill) -> None:
    """A persistent session held by node 2 keeps what node 1's publisher queued into it before
    the kill."""
    # Prepare
    back = after_kill.peers.new(1, client_id=after_kill.away_on_node2, persistent=True)

    # Execute
    code, present, _props = back.start()

    # Assert
    assert (code.value, present) == (0, True)
    assert back.drained() == [b"queued-on-node2"]


@pytest.mark.chaos
def test_retained_messages_after_the_kill(after_kill: AfterKill) -> None:
    """On node 2 after the kill, the retained message published through node 2 is served and
    the one published through node 1 is not (node 2 never served it: see the test above)."""
    # Prepare
    reader = after_kill.peers.on(1)

    # Execute
    reader.subscribe(f"{after_kill.topic}/retained1")
    reader.subscribe(f"{after_kill.topic}/retained2")

    # Assert
    assert reader.drained() == [b"via-node2"]


def test_node_that_does_not_come_up_is_a_broker_failure_with_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node whose ejabberd refuses its config fails start with BROKER_FAILED, the node's
    exit code and ejabberd's own words, and leaves nothing running."""
    # Prepare
    monkeypatch.setattr(ejabberd, "_YML", ejabberd._YML + "no_such_option: 1\n")
    cluster = EjabberdCluster(EjabberdParams(work_dir=tmp_path))

    # Execute
    with pytest.raises(TransportError) as caught:
        cluster.start(timeout=20)

    # Assert
    assert caught.value.reason is Reason.BROKER_FAILED
    assert "exited with code 1; log tail:" in caught.value.detail
    assert "Unknown option: no_such_option" in caught.value.detail
    assert cluster.nodes == ()
