"""Config loading: a TOML file plus FEDSTREAM_* environment overrides into frozen typed models."""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fedstream.shared.errors import ConfigError, Reason

# The parsed TOML of the load_config call in progress, read by _FileSource.
_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("_FILE_DATA", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The lowest-priority settings source: the TOML file."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


class Section(BaseModel):
    """A frozen config table that rejects unknown keys (typos fail loudly)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsConfig(Section):
    """TLS to the broker with a client certificate (`fedstream pki` issues them)."""

    ca: Path = Field(description="the federation CA's certificate")
    cert: Path = Field(description="this identity's certificate; its CN is the MQTT username")
    key: Path = Field(description="its private key")


# HOST:PORT, with an IPv6 address in brackets.
_ADDRESS = r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$"


class BrokerConfig(Section):
    """Where the MQTT broker is."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    connect_timeout_s: float = Field(default=30.0, gt=0)
    tls: TlsConfig | None = None
    failover: list[Annotated[str, Field(pattern=_ADDRESS)]] = Field(
        default_factory=list,
        description="more nodes of the same broker cluster (HOST:PORT), tried in turn after "
                    "host:port whenever the node in use cannot be reached")
    username: str | None = Field(default=None, min_length=1,
                                 description="MQTT username (brokers that want credentials)")
    password_file: Path | None = Field(default=None,
                                       description="a file holding the MQTT password")


class LogConfig(Section):
    """Log format and level."""

    json_lines: bool | None = Field(default=None, description="None: JSON unless a TTY")
    level: str = Field(default="info", pattern="^(debug|info|warning|error)$")


class MetricsConfig(Section):
    """Prometheus metrics over HTTP (`GET /metrics`)."""

    port: int | None = Field(default=None, ge=0, le=65535,
                             description="None: no endpoint; 0 picks a free port (tests); the "
                                         "shipped configs use 9610 (cloud) and 9611 (edge)")
    host: str = Field(default="127.0.0.1", description="bind address (0.0.0.0 for a remote "
                                                       "Prometheus)")


class ServiceConfig(BaseSettings):
    """Base of the edge and cloud configs: TOML values, overridden by FEDSTREAM_* variables."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix="FEDSTREAM_", env_nested_delimiter="__"
    )

    federation: str = "default"
    model: str = "digits-mlp"
    broker: BrokerConfig = BrokerConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    threads: int | None = Field(default=None, ge=1, le=1024,
                                description="torch threads; None keeps torch's default")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit overrides (CLI flags, as init values) beat the environment, which beats
        # the file.
        return init_settings, env_settings, _FileSource(settings_cls)


C = TypeVar("C", bound=ServiceConfig)


def state_directory(unit: str) -> Path:
    """The default data directory of the service `unit`: where systemd keeps its state.

    Args:
        unit: The unit's `StateDirectory=` name, e.g. "fedstream-cloud".

    Returns:
        The first entry of `$STATE_DIRECTORY` (systemd sets it, colon-separated, for a unit
        with `StateDirectory=`), else `/var/lib/<unit>`.
    """
    first = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(first) if first else Path("/var/lib") / unit


def state_dir_field(unit: str, description: str) -> Any:
    """A `data_dir` field defaulting to `state_directory(unit)` when the service starts.

    Args:
        unit: The unit's `StateDirectory=` name, e.g. "fedstream-cloud".
        description: What the service keeps there; the default is appended.
    """
    return Field(default_factory=partial(state_directory, unit),
                 description=f"{description}; default $STATE_DIRECTORY, else /var/lib/{unit}")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file.

    Raises:
        ConfigError: the file is missing (config_not_found) or not valid TOML (bad_config).
    """
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as err:
        raise ConfigError(Reason.CONFIG_NOT_FOUND, str(path)) from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(Reason.BAD_CONFIG, f"{path}: {err}") from err


def load_config(cls: type[C], path: Path | None, **overrides: Any) -> C:
    """Build `cls` from a TOML file (optional), FEDSTREAM_* variables and explicit overrides.

    Raises:
        ConfigError: listing every invalid key with its path, e.g. `broker.port: ...`.
    """
    token = _FILE_DATA.set(read_toml(path) if path is not None else {})
    try:
        return cls(**overrides)
    except ValidationError as err:
        where = f"{path}: " if path else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(Reason.BAD_CONFIG, f"{where}{problems}") from err
    finally:
        _FILE_DATA.reset(token)

