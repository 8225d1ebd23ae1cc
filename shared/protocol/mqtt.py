"""The MQTT adapter (with its helpers `_puback.py` and `_nodes.py`, the only place that
imports paho): connect with retries and failover, QoS 1 publishes confirmed by PUBACK reason
code, manual ack, and MQTT v5 request/response."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fedstream.shared.errors import Reason, TransportError
from fedstream.shared.protocol import _sockets
from fedstream.shared.protocol._nodes import Nodes
from fedstream.shared.protocol._puback import Batch, Refusals
from fedstream.shared.protocol.connection import Connection
from fedstream.shared.protocol.inbound import Inbound, Will
from fedstream.shared.protocol.topics import Topic

__all__ = ["Inbound", "MqttClient", "Will"]  # the types too: callers import them here

log = structlog.get_logger(__name__)

CLOSE_TIMEOUT_S = 2.0  # how long `close` waits for paho's network thread (see there)


class MqttClient:
    """A paho client run on its own network thread.

    Args:
        client_id: Stable id; with `persistent=True` the broker keeps the session across
            reconnects so QoS 1 messages queued while away are delivered.
        conn: The broker to connect to.
        on_message: Called on the network thread for each message; keep it short
            (services hand the message to a queue).
        manual_ack: Ack QoS 1 messages only when `ack()` is called (after durable handling).
        subscriptions: Filters (re)subscribed at QoS 1 on every connect.
        on_reconnect: Called on the network thread after each accepted reconnect (not the
            first connect); keep it short.
        no_delay: Send each frame at once (TCP_NODELAY), for requests and replies. A client
            that mostly receives a flood (sensor intake) turns it off: each of its PUBACKs
            would be a packet of its own.

    With failover nodes (`Connection.failover`: the cluster's other nodes) it connects to the
    first that answers, and when the node in use is lost reconnects to the next in turn, with
    the same session; what the cluster kept of it, delivery does not rest on (receipts and
    the outbox).
    """

    def __init__(self, *, client_id: str, conn: Connection,
                 on_message: Callable[[Inbound], None] | None = None,
                 subscriptions: Iterable[Topic] = (), persistent: bool = False,
                 session_expiry_s: int = 24 * 3600,
                 will: Will | None = None, manual_ack: bool = False,
                 max_inflight: int = 100,
                 on_reconnect: Callable[[], None] | None = None,
                 no_delay: bool = True) -> None:
        self.client_id = client_id
        self.conn = conn
        self._persistent = persistent
        self._on_inbound = on_message
        self._on_reconnect = on_reconnect
        self._subscriptions = list(subscriptions)
        self._connected = threading.Event()
        # Set once the broker acknowledged every subscription of the first session, so a
        # message published after `connect` returns is one this client receives.
        self._subscribed = threading.Event()
        self._unacked_subs: set[int] = set()
        self._lock = threading.Lock()
        # PUBACK waits by message id; None marks the id of a publish whose wait was abandoned.
        # A Topic marks a publish nobody waits for (`publish_unwaited`).
        self._acks: dict[int, Batch | Topic | None] = {}
        self._early: dict[int, ReasonCode] = {}
        self._refusals = Refusals()
        self._replies: dict[bytes, Future[Inbound]] = {}
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                   protocol=paho.MQTTv5, manual_ack=manual_ack)
        self._window = max_inflight
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        if will is not None:
            self._client.will_set(str(will.topic), will.payload, qos=1, retain=will.retain)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_connect_fail = self._on_connect_fail
        if no_delay:
            self._client.on_socket_open = _sockets.no_delay
        if conn.username is not None:
            self._client.username_pw_set(conn.username, conn.password)
        self._nodes = Nodes(conn, persistent=persistent, session_expiry_s=session_expiry_s)
        self._closing = False
        self._connack: Future[ReasonCode] = Future()  # made anew by each `connect`
        if conn.tls is not None:  # ConfigError for missing or unreadable files, at once
            self._client.tls_set_context(_sockets.tls_context(conn.tls))

    def connect(self, timeout_s: float | None = None) -> None:
        """Connect (retrying while the broker is unreachable) and start the network thread.

        What waiting cannot fix fails at once: a host name that does not resolve, and a
        broker that answers the CONNECT with a refusal (bad credentials, not authorised). A
        node that takes the TCP connection but sends no CONNACK passes the turn to the next.

        Raises:
            TransportError: broker_unknown_host if the host name does not resolve;
                broker_refused if the broker's CONNACK refuses the session;
                broker_unreachable once `timeout_s` (default: the connection's
                `connect_timeout_s`) has passed without a TCP connection,
                or without a CONNACK after it.
        """
        conn = self.conn
        if timeout_s is None:
            timeout_s = conn.connect_timeout_s
        deadline = time.monotonic() + timeout_s
        while True:
            self._connack = Future()  # this attempt's CONNACK, or a TLS close before it
            self._nodes.open(self._client, deadline - time.monotonic(), self._connack)
            self._client.loop_start()
            try:
                code = self._connack.result(self._nodes.connack_wait(deadline))
                break
            except (FutureTimeout, TransportError) as err:  # no CONNACK, or closed first
                self._client.loop_stop()
                if self._nodes.next_node(deadline):
                    continue  # the next node's turn
                if isinstance(err, TransportError):
                    raise
                raise TransportError(Reason.BROKER_UNREACHABLE, f"no CONNACK from {conn}") from err
        if code.is_failure:
            # paho would reconnect with the same refused credentials every few seconds.
            self._client.loop_stop()
            raise TransportError(Reason.BROKER_REFUSED, f"{conn}: {code}")
        if not self._subscribed.wait(timeout_s):
            self._client.loop_stop()
            raise TransportError(Reason.BROKER_UNREACHABLE, f"no SUBACK from {conn}")

    @property
    def address(self) -> str:
        """HOST:PORT of the node in use (or tried next)."""
        return self._nodes.address

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the session (False while paho reconnects)."""
        return self._connected.is_set()

    def close(self, *, will: bool = False, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Disconnect and stop the network thread, waiting at most `timeout_s` for it.

        paho's `loop_stop` joins its network thread without a bound, and that thread may sit
        in a TCP connect to a host that does not answer or in flushing to a broker that stopped
        reading. It is a daemon thread, told to stop, so leaving it behind cannot keep the
        process alive.

        Args:
            will: Ask the broker to publish the last will anyway (MQTT v5 reason "disconnect
                with will message"), e.g. when the status the will stands for could not be
                published; by default a clean disconnect discards the will.
            timeout_s: How long to wait for paho's network thread.
        """
        code = ReasonCode(PacketTypes.DISCONNECT, identifier=4 if will else 0)
        self._closing = True

        def stop() -> None:
            self._client.disconnect(reasoncode=code)
            self._client.loop_stop()

        stopper = threading.Thread(target=stop, name=f"mqtt-close-{self.client_id}", daemon=True)
        stopper.start()
        stopper.join(timeout_s)
        if stopper.is_alive():
            log.warning("network_thread_abandoned", client_id=self.client_id,
                        timeout_s=timeout_s)

    def publish(self, topic: Topic, payload: bytes, *, retain: bool = False,
                timeout_s: float = 30.0) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK.

        Raises:
            TransportError: publish_failed if the broker refuses it or does not confirm in time.
        """
        self.publish_many([(topic, payload)], retain=retain, timeout_s=timeout_s)

    def publish_many(self, items: Iterable[tuple[Topic, bytes]], *, retain: bool = False,
                     timeout_s: float = 60.0, properties: Properties | None = None) -> None:
        """Publish every item at QoS 1 and wait for all PUBACKs, keeping the window full.

        Items are taken from `items` as the window drains (up to twice the in-flight window
        ahead), so a generator of frames holds only that many in memory.

        Raises:
            TransportError: publish_failed for the first item, in order, that the broker
                refused or that went unconfirmed for `timeout_s` once it was the oldest
                unconfirmed item (as if each PUBACK were awaited in turn).
        """
        batch = Batch()
        # Hand paho up to two windows and top up once half a window is confirmed, so its
        # queue never runs dry and this thread wakes once per half window.
        ahead = 2 * self._window if self._window > 0 else None
        refill = max(1, self._window // 2)
        try:
            going = True
            for seq, (topic, payload) in enumerate(items):
                if ahead is not None and len(batch.pending) >= ahead:
                    going = batch.wait(self._lock, ahead - refill, timeout_s)
                    if not going:
                        break
                self._send(topic, payload, retain=retain, properties=properties, batch=batch,
                           seq=seq)
            if going:
                batch.wait(self._lock, 0, timeout_s)
            with self._lock:
                failed = min(batch.failures, default=None)
                waiting = min(batch.pending.values(), default=None)
        finally:
            with self._lock:
                for mid in batch.pending:
                    self._acks[mid] = None
        if failed is not None and (waiting is None or failed[0] < waiting[0]):
            raise TransportError(Reason.PUBLISH_FAILED, f"{failed[1]}: {failed[2]}")
        if waiting is not None:
            raise TransportError(Reason.PUBLISH_FAILED, f"no PUBACK for {waiting[1]}")

    def publish_unwaited(self, topic: Topic, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 without waiting for the PUBACK: a refusal is logged
        (`publish_refused`, see `Refusals`). For messages whose loss the protocol repairs
        (a receipt: the edge asks again), which a sender should not wait on.

        Raises:
            TransportError: publish_failed if paho cannot take the message at all.
        """
        info = self._client.publish(str(topic), payload, qos=1, retain=retain)
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise TransportError(Reason.PUBLISH_FAILED, f"{topic}: {paho.error_string(info.rc)}")
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._acks[info.mid] = topic
        if early is not None:
            self._refusals(topic, early)

    def clear_retained(self, topics: Iterable[Topic]) -> None:
        """Delete retained messages (an empty retained payload clears a topic)."""
        self.publish_many(((t, b"") for t in topics), retain=True)

    def ack(self, msg: Inbound) -> None:
        """Acknowledge a QoS 1 message received with manual ack."""
        if msg.qos > 0:
            self._client.ack(msg.mid, msg.qos)

    def request(self, topic: Topic, payload: bytes, reply_to: Topic,
                timeout_s: float = 10.0) -> Inbound:
        """MQTT v5 request/response: publish with a response topic and correlation data.

        `reply_to` must be among this client's subscriptions.

        Raises:
            TransportError: no_reply if nothing answers within `timeout_s`.
        """
        correlation = uuid.uuid4().bytes
        fut: Future[Inbound] = Future()
        self._replies[correlation] = fut
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = str(reply_to)
        props.CorrelationData = correlation
        try:
            self.publish_many([(topic, payload)], properties=props)
            return fut.result(timeout_s)
        except FutureTimeout as err:
            raise TransportError(Reason.NO_REPLY, f"no answer on {topic} in {timeout_s}s") from err
        finally:
            self._replies.pop(correlation, None)

    def reply(self, to: Inbound, payload: bytes, *, timeout_s: float = 60.0) -> None:
        """Answer a request received with a response topic (TransportError if the broker
        does not confirm it within `timeout_s`)."""
        if to.response_topic is None:
            return
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if to.correlation is not None:
            props.CorrelationData = to.correlation
        self.publish_many([(Topic(to.response_topic), payload)], properties=props,
                          timeout_s=timeout_s)

    def _send(self, topic: Topic, payload: bytes, *, retain: bool,
              properties: Properties | None, batch: Batch, seq: int) -> None:
        info = self._client.publish(str(topic), payload, qos=1, retain=retain,
                                    properties=properties)
        # NO_CONN is fine: paho keeps the message and sends it after reconnecting.
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise TransportError(Reason.PUBLISH_FAILED, f"{topic}: {paho.error_string(info.rc)}")
        # The PUBACK may beat us here; _on_publish then parks its code in _early. Our lock is
        # never held across a paho call: paho runs on_publish under its own mutex.
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                batch.pending[info.mid] = (seq, topic)
                self._acks[info.mid] = batch
            else:
                batch.settle(seq, topic, early)

    def _on_connect(self, client: paho.Client, _u: object, _flags: object, code: ReasonCode,
                    _props: object) -> None:
        # paho calls this again on every reconnect; only the first answer ends connect().
        first = not self._connack.done()
        if code.is_failure:
            log.warning("broker_refused", client_id=self.client_id, broker=self.address,
                        reason=str(code))
            if first:
                self._connack.set_result(code)
            return
        mids = {mid for sub in self._subscriptions
                if (mid := client.subscribe(str(sub), qos=1)[1]) is not None}
        with self._lock:  # SUBACKs come on this thread, after this callback returns
            self._unacked_subs = mids
            if not mids:
                self._subscribed.set()
        log.debug("broker_connected", client_id=self.client_id, broker=self.address)
        self._connected.set()
        if first:
            self._connack.set_result(code)
        elif self._on_reconnect is not None:
            self._on_reconnect()

    def _on_subscribe(self, _c: paho.Client, _u: object, mid: int,
                      codes: list[ReasonCode], _p: object) -> None:
        refused = [str(c) for c in codes if c.is_failure]
        if refused:
            log.warning("subscription_refused", client_id=self.client_id, reason=refused)
        with self._lock:
            self._unacked_subs.discard(mid)
            if not self._unacked_subs:
                self._subscribed.set()

    def _on_disconnect(self, _c: paho.Client, _u: object, _f: object, code: ReasonCode,
                       _p: object) -> None:
        self._connected.clear()
        if code.is_failure:
            log.warning("broker_disconnected", client_id=self.client_id, reason=str(code),
                        broker=self.address)
        self._fail_over()
        if self.conn.tls is not None and not self._connack.done():
            # Under TLS 1.3 a broker refusing our certificate (revoked: on its CRL) closes
            # the connection after the handshake, before any CONNACK.
            self._connack.set_exception(TransportError(
                Reason.BROKER_REFUSED, f"{self.conn}: closed before CONNACK (a revoked or "
                                       "refused client certificate)"))

    def _on_connect_fail(self, _c: paho.Client, _u: object) -> None:
        self._fail_over()  # a reconnect found no broker at the node in use

    def _fail_over(self) -> None:
        """The node in use is lost: reconnect to the next (see `Nodes.fail_over`)."""
        if not self._nodes.several or self._closing or not self._connack.done():
            return  # one node; our own close; or `connect` still choosing its node
        lost = self.address
        self._nodes.fail_over(self._client)
        log.info("broker_failover", client_id=self.client_id, lost=lost, to=self.address)

    def _on_publish(self, _c: paho.Client, _u: object, mid: int, code: ReasonCode,
                    _p: object) -> None:
        with self._lock:
            if mid not in self._acks:
                self._early[mid] = code
                return
            batch = self._acks.pop(mid)
            if isinstance(batch, Batch):
                seq, topic = batch.pending.pop(mid)
                batch.settle(seq, topic, code)
                if len(batch.pending) <= batch.limit or batch.failed_in_order():
                    batch.room.set()
        if isinstance(batch, Topic):
            self._refusals(batch, code)

    def _on_message(self, _c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        props = getattr(m, "properties", None)
        msg = Inbound(topic=m.topic, payload=bytes(m.payload), retain=bool(m.retain),
                      qos=m.qos, mid=m.mid,
                      response_topic=getattr(props, "ResponseTopic", None),
                      correlation=getattr(props, "CorrelationData", None))
        waiter = self._replies.get(msg.correlation) if msg.correlation else None
        if waiter is not None and msg.response_topic is None:
            waiter.set_result(msg)
            self.ack(msg)
        elif self._on_inbound is not None:
            self._on_inbound(msg)
        else:
            self.ack(msg)
