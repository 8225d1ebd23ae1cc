"""Where a broker is and how to hold a session with it: the one typed value every MQTT client
of the project is built from."""

from __future__ import annotations

from dataclasses import dataclass, field
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
        failover: More nodes of the same broker cluster, (host, port) each: a client tries
            them in turn after `host:port` whenever the node it uses cannot be reached.
        username: MQTT username, for brokers that want credentials (None: send none).
        password: Its password (never printed).

    The defaults are the `[broker]` table's (`BrokerConfig`): written once, there.

    Raises:
        ConfigError: bad_config for an empty host, a port, keepalive or timeout out of range,
            or a password without a username.
    """

    host: str
    port: int
    keepalive_s: int = _DEFAULTS.keepalive_s
    connect_timeout_s: float = _DEFAULTS.connect_timeout_s
    tls: ClientTls | None = None
    failover: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for host, port in self.addresses:
            if not host:
                raise ConfigError(Reason.BAD_CONFIG, "broker host is empty")
            if not 1 <= port <= 65535:
                raise ConfigError(Reason.BAD_CONFIG, f"broker port {port} not in 1..65535")
        if not 1 <= self.keepalive_s <= 65535:
            raise ConfigError(Reason.BAD_CONFIG,
                              f"keepalive_s {self.keepalive_s} not in 1..65535")
        if not self.connect_timeout_s > 0:
            raise ConfigError(Reason.BAD_CONFIG,
                              f"connect_timeout_s {self.connect_timeout_s} is not positive")
        if self.password is not None and self.username is None:
            raise ConfigError(Reason.BAD_CONFIG, "a broker password without a username")

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Every node to try, in order: `host:port` first, then the failover ones."""
        return ((self.host, self.port), *self.failover)

    @classmethod
    def from_config(cls, cfg: BrokerConfig) -> Connection:
        """The connection a service's `[broker]` table describes, its password read from
        `password_file` (trailing newline dropped).

        Raises:
            ConfigError: bad_config for an unreadable password file or a bad address.
        """
        tls = None if cfg.tls is None else ClientTls(ca=cfg.tls.ca, cert=cfg.tls.cert,
                                                      key=cfg.tls.key)
        return cls(host=cfg.host, port=cfg.port, keepalive_s=cfg.keepalive_s,
                   connect_timeout_s=cfg.connect_timeout_s, tls=tls,
                   failover=tuple(parse_address(a) for a in cfg.failover),
                   username=cfg.username, password=_read_password(cfg.password_file))

    def __str__(self) -> str:
        more = f" (+{len(self.failover)} failover)" if self.failover else ""
        return f"{self.host}:{self.port}{' (TLS)' if self.tls else ''}{more}"


def parse_address(text: str) -> tuple[str, int]:
    """(host, port) from `HOST:PORT` (`[v6 address]:PORT` for IPv6).

    Raises:
        ConfigError: BAD_CONFIG for anything else.
    """
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit():
        raise ConfigError(Reason.BAD_CONFIG, f"broker must be HOST:PORT; got {text!r}")
    return host, int(port)


def _read_password(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(Reason.BAD_CONFIG,
                          f"broker password_file {path}: {err}") from err
