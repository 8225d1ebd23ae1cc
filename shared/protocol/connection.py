"""Where a broker is and how to hold a session with it: the one typed value every MQTT client
of the project is built from."""

from __future__ import annotations

from dataclasses import dataclass

from fedstream.shared.config import BrokerConfig
from fedstream.shared.errors import ConfigError, Reason

_DEFAULTS = BrokerConfig()


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """Where a broker is and how to hold a session with it (issue 12 adds credentials and TLS).

    Args:
        host: Broker host name or address.
        port: Broker TCP port.
        keepalive_s: MQTT keepalive; the broker drops a client silent for 1.5 times this.
        connect_timeout_s: How long `MqttClient.connect` keeps trying by default.

    The defaults are the `[broker]` table's (`BrokerConfig`): written once, there.

    Raises:
        ConfigError: bad_config for an empty host or a port, keepalive or timeout out of range.
    """

    host: str
    port: int
    keepalive_s: int = _DEFAULTS.keepalive_s
    connect_timeout_s: float = _DEFAULTS.connect_timeout_s

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
        return cls(host=cfg.host, port=cfg.port, keepalive_s=cfg.keepalive_s,
                   connect_timeout_s=cfg.connect_timeout_s)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"
