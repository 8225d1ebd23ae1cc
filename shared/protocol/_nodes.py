"""Which node of a broker cluster an `MqttClient` uses, and the turn to the next one."""

from __future__ import annotations

import socket
import ssl
import time
from concurrent.futures import Future

import paho.mqtt.client as paho
import structlog
import tenacity
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fedstream.shared.errors import Reason, TransportError
from fedstream.shared.protocol import _sockets
from fedstream.shared.protocol.connection import Connection

log = structlog.get_logger(__name__)

# With several nodes, a node that takes the TCP connection but sends no CONNACK this long
# passes the turn to the next one.
CONNACK_WAIT_S = 5.0


class Nodes:
    """The nodes of `conn` (`Connection.addresses`) in turn, with the session settings every
    CONNECT to any of them carries.

    Args:
        conn: The broker and its failover nodes.
        persistent: Keep the session (clean start off, a session expiry).
        session_expiry_s: How long the broker keeps a persistent session for us.
    """

    def __init__(self, conn: Connection, *, persistent: bool, session_expiry_s: int) -> None:
        self.conn = conn
        self._at = 0
        self._failed = 0  # the node the last failed connect was to
        self._clean = not persistent
        self._props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._props.SessionExpiryInterval = session_expiry_s if persistent else 0

    @property
    def several(self) -> bool:
        """True when there is another node to turn to."""
        return len(self.conn.addresses) > 1

    @property
    def address(self) -> str:
        """HOST:PORT of the node in use (or tried next)."""
        host, port = self.conn.addresses[self._at]
        return f"{host}:{port}"

    def open(self, client: paho.Client, timeout_s: float,
             connack: Future[ReasonCode]) -> None:
        """Open the TCP connection and send the CONNECT, to each node in turn, retrying for
        `timeout_s` while none can be reached (not once `connack` holds an answer). What
        waiting cannot fix (a host name that does not resolve, a refused TLS handshake)
        passes the turn to the next node, and ends the attempt once every node failed so.

        Raises:
            TransportError: broker_unknown_host if a host name does not resolve;
                broker_refused for a refused TLS handshake (or the refusal in `connack`);
                broker_unreachable once `timeout_s` has passed.
        """
        hopeless: set[int] = set()  # nodes that failed in a way waiting cannot fix

        def worth(err: BaseException) -> bool:
            if connack.done():
                return False
            if _sockets.worth_retrying(err):
                return True
            hopeless.add(self._failed)
            return len(hopeless) < len(self.conn.addresses)

        retrying = tenacity.retry(
            retry=tenacity.retry_if_exception(worth),
            wait=tenacity.wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.1),
            stop=tenacity.stop_after_delay(timeout_s),
            reraise=True,
            before_sleep=lambda rs: log.info("retry_scheduled", op="connect",
                                             attempt=rs.attempt_number, broker=self.address),
        )
        try:
            retrying(self._connect)(client)
        except socket.gaierror as err:
            raise TransportError(Reason.BROKER_UNKNOWN_HOST, f"{self.conn}: {err}") from err
        except ssl.SSLError as err:  # the broker's certificate, or ours, is refused
            raise TransportError(Reason.BROKER_REFUSED, f"{self.conn}: TLS: {err}") from err
        except _sockets.TRANSIENT as err:
            if connack.done():
                connack.result()  # the refusal the client's _on_disconnect recorded
            raise TransportError(Reason.BROKER_UNREACHABLE, f"{self.conn}: {err}") from err

    def _connect(self, client: paho.Client) -> None:
        """One TCP connect and CONNECT to the node in turn; a node that cannot be reached
        passes the turn to the next before the error goes on (to the caller's retries)."""
        host, port = self.conn.addresses[self._at]
        try:
            client.connect(host, port, keepalive=self.conn.keepalive_s,
                           clean_start=self._clean, properties=self._props)
        except _sockets.TRANSIENT:  # OSError: socket.gaierror and ssl.SSLError too
            self._failed = self._at
            self._turn()
            raise

    def connack_wait(self, deadline: float) -> float:
        """How long to wait for a CONNACK from the node in turn: until `deadline` with one
        node, else at most `CONNACK_WAIT_S` before trying the next."""
        left = max(0.0, deadline - time.monotonic())
        return left if not self.several else min(left, CONNACK_WAIT_S)

    def next_node(self, deadline: float) -> bool:
        """Pass the turn to the next node after one that sent no CONNACK; False (nothing to
        try) with one node or past `deadline`."""
        if not self.several or time.monotonic() >= deadline:
            return False
        lost = self.address
        self._turn()
        log.info("broker_failover", lost=lost, to=self.address, reason="no CONNACK")
        return True

    def fail_over(self, client: paho.Client) -> None:
        """Point paho's next reconnect at the next node (on paho's network thread, the
        connection closed). paho changes a client's address only through `connect_async`,
        which takes the session settings again."""
        self._turn()
        host, port = self.conn.addresses[self._at]
        client.connect_async(host, port, keepalive=self.conn.keepalive_s,
                             clean_start=self._clean, properties=self._props)

    def _turn(self) -> None:
        self._at = (self._at + 1) % len(self.conn.addresses)
