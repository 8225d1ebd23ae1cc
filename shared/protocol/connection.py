"""Where a broker is and how to hold a session with it: the one typed value every MQTT client
of the project is built from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedstream.shared.config import BrokerConfig
from fedstream.shared.errors import ConfigError, Reason

_DEFAULTS = BrokerConfig()


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTls:
    """TLS to the broker with this client's certificate (its CN is the MQTT username).

    Args:
        ca: The federation CA's certificate, the only one the broker's is checked against.
        cert: This identity's certificate.
        key: Its private key.
    """

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """Where a broker is and how to hold a session with it.

    Args:
        host: Broker host name or address.
        port: Broker TCP port.
        keepalive_s: MQTT keepalive; the broker drops a client silent for 1.5 times this.
        connect_timeout_s: How long `MqttClient.connect` keeps trying by default.
        tls: Connect over TLS with a client certificate; None: plain TCP (loopback, dev).

    The defaults are the `[broker]` table's (`BrokerConfig`): written once, there.

    Raises:
        ConfigError: bad_config for an empty host or a port, keepalive or timeout out of range.
    """

    host: str
    port: int
    keepalive_s: int = _DEFAULTS.keepalive_s
    connect_timeout_s: float = _DEFAULTS.connect_timeout_s
    tls: ClientTls | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError(Reason.BAD_CONFIG, "broker host is empty")
        if not 1 <= self.port <= 65535:
            raise ConfigError(Reason.BAD_CONFIG, f"broker port {self.port} not in 1..65535")
        if not 1 <= self.keepalive_s <= 65535:
            raise ConfigError(Reason.BAD_CONFIG,
                              f"keepalive_s {self.keepalive_s} not in 1..65535")
        if not self.connect_timeout_s > 0:
            raise ConfigError(Reason.BAD_CONFIG,
                              f"connect_timeout_s {self.connect_timeout_s} is not positive")

    @classmethod
    def from_config(cls, cfg: BrokerConfig) -> Connection:
        """The connection a service's `[broker]` table describes."""
        tls = None if cfg.tls is None else ClientTls(ca=cfg.tls.ca, cert=cfg.tls.cert,
                                                      key=cfg.tls.key)
        return cls(host=cfg.host, port=cfg.port, keepalive_s=cfg.keepalive_s,
                   connect_timeout_s=cfg.connect_timeout_s, tls=tls)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}{' (TLS)' if self.tls else ''}"
