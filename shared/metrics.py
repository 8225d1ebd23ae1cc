"""The `/metrics` endpoint both services serve (prometheus-client), and the few helpers their
metric sets share. Each service owns its registry (`cloud/metrics.py`, `edge_node/metrics.py`),
so two services in one process never mix their series."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from fedstream.shared.config import MetricsConfig
from fedstream.shared.errors import ConfigError, Reason

log = structlog.get_logger(__name__)


class MetricsEndpoint:
    """Serves one registry on `cfg.host:cfg.port` from a daemon thread (none when the port is
    not configured).

    Args:
        cfg: Where to listen.
        registry: What to serve.
    """

    def __init__(self, cfg: MetricsConfig, registry: CollectorRegistry) -> None:
        self._cfg, self._registry = cfg, registry
        self._server: WSGIServer | None = None

    @property
    def port(self) -> int | None:
        """The bound port while serving (the configured one before; None: no endpoint)."""
        return self._server.server_port if self._server is not None else self._cfg.port

    def start(self) -> None:
        """Bind and serve; a no-op without a configured port.

        Raises:
            ConfigError: BAD_CONFIG when the address cannot be bound.
        """
        if self._cfg.port is None or self._server is not None:
            return
        try:
            self._server, _thread = start_http_server(self._cfg.port, self._cfg.host,
                                                      registry=self._registry)
        except OSError as err:
            raise ConfigError(Reason.BAD_CONFIG, f"metrics {self._cfg.host}:{self._cfg.port}: "
                                                 f"{err}") from err
        log.info("metrics_started", host=self._cfg.host, port=self.port)

    def stop(self) -> None:
        """Stop serving (again: no-op)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    """A gauge family with one unlabelled sample, read at scrape time."""
    return GaugeMetricFamily(name, doc, value=value)


def total(name: str, doc: str, value: float) -> CounterMetricFamily:
    """A counter family with one unlabelled sample, from a total kept elsewhere."""
    return CounterMetricFamily(name, doc, value=value)


def gauges(name: str, doc: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    """A gauge family with one sample per `label` value, read at scrape time."""
    family = GaugeMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def counts(name: str, doc: str, label: str,
           totals: Mapping[str, int] | Iterable[tuple[str, int]]) -> CounterMetricFamily:
    """A counter family with one sample per `label` value, from totals kept elsewhere (a
    service's own tallies), read at scrape time."""
    family = CounterMetricFamily(name, doc, labels=[label])
    items = totals.items() if isinstance(totals, Mapping) else totals
    for key, value in sorted(items):
        family.add_metric([key], value)
    return family
