"""The socket side of an MQTT session: which connect errors waiting can fix, Nagle's algorithm
off, and the TLS context a client certificate makes (for `shared/protocol/mqtt.py`)."""

from __future__ import annotations

import socket
import ssl

from fedstream.shared.errors import ConfigError, Reason
from fedstream.shared.protocol.connection import ClientTls

# Errors worth another connect attempt: the broker may still be starting or restarting, or the
# network still coming up. `worth_retrying` takes out the OSErrors that waiting cannot fix.
TRANSIENT = (ConnectionRefusedError, ConnectionResetError, TimeoutError, OSError)


def worth_retrying(err: BaseException) -> bool:
    """A transient error, but not a host name that does not resolve: waiting fixes no typo.

    A temporary resolver failure (EAI_AGAIN, e.g. DNS not up yet at boot) is retried; a
    certificate refused stays refused.
    """
    if isinstance(err, socket.gaierror):
        return err.errno == socket.EAI_AGAIN
    if isinstance(err, ssl.SSLError):
        return False
    return isinstance(err, TRANSIENT)


def no_delay(_c: object, _u: object, sock: object) -> None:
    """paho's `on_socket_open`: send small frames (commands, replies, inference) at once; with
    Nagle's algorithm on, each waits for the broker's delayed ACK (~40 ms a hop)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def tls_context(tls: ClientTls) -> ssl.SSLContext:
    """TLS with this client's certificate, the broker's checked (name included) against the
    federation CA only.

    Raises:
        ConfigError: BAD_CONFIG when a file is missing or not a certificate or key.
    """
    try:
        context = ssl.create_default_context(cafile=str(tls.ca))
        context.load_cert_chain(certfile=str(tls.cert), keyfile=str(tls.key))
    except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
        raise ConfigError(Reason.BAD_CONFIG, f"broker TLS files: {err}") from err
    return context
