"""The edge daemon's Prometheus metrics: training and sending counted as they happen, the
outbox, the held model and the sensor intake read at scrape time (see `cloud/metrics.py` for
the naming rules)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from fedstream.edge_node.sensors.reading import DropReason
from fedstream.shared.metrics import counts, gauge, total
from fedstream.shared.protocol._fields import Scalar

TRAINING_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DROPPED = "dropped."


@dataclass(frozen=True, slots=True)
class EdgeLive:
    """What the daemon holds right now."""

    model_version: int
    outbox: int
    data: Mapping[str, Scalar]


class EdgeMetrics:
    """The edge daemon's metric set in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.training_seconds = Histogram("fedstream_edge_training_seconds",
                                          "Local training time per update",
                                          buckets=TRAINING_BUCKETS_S, registry=r)
        self.trained_samples = Counter("fedstream_edge_trained_samples",
                                       "Samples trained on, summed over updates", registry=r)
        self.updates_sent = Counter("fedstream_edge_updates_sent", "Updates made and sent",
                                    registry=r)
        self.sent_bytes = Counter("fedstream_edge_update_sent_bytes",
                                  "Bytes of update blobs sent (first sends)", registry=r)
        self.resent_chunks = Counter("fedstream_edge_resent_chunks",
                                     "Chunks sent again because the cloud named them missing",
                                     registry=r)
        self.probes = Counter("fedstream_edge_probes_sent",
                              "Probes of updates still waiting for a receipt", registry=r)
        self.receipts = Counter("fedstream_edge_receipts", "Verdicts on this edge's updates",
                                ["verdict", "reason"], registry=r)
        self.declines = Counter("fedstream_edge_rounds_declined", "Rounds declined, by reason",
                                ["reason"], registry=r)

    def watch(self, read: Callable[[], EdgeLive]) -> None:
        """Serve the gauges `read` returns at every scrape."""
        self.registry.register(_EdgeCollector(read))


class _EdgeCollector(Collector):
    def __init__(self, read: Callable[[], EdgeLive]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        live = self._read()
        yield gauge("fedstream_edge_model_version", "The model version held (-1: none yet)",
                    live.model_version)
        yield gauge("fedstream_edge_outbox_updates", "Updates kept until their receipt",
                    live.outbox)
        data = live.data
        if data.get("source") != "sensors":
            return
        yield gauge("fedstream_sensor_readings_stored", "Readings held in the sample store",
                    float(data.get("readings", 0)))
        yield total("fedstream_sensor_messages", "Sensor messages received",
                    float(data.get("messages", 0)))
        dropped = {str(r): 0 for r in DropReason}  # every reason, so a rate starts at zero
        dropped.update({k.removeprefix(DROPPED): int(v) for k, v in data.items()
                        if k.startswith(DROPPED)})
        yield counts("fedstream_sensor_readings_dropped", "Readings dropped, by reason",
                     "reason", dropped)
